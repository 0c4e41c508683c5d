"""From a finished study to a model in production: ``export`` → ``train`` (→ int8) → ``predict``.

* :func:`export_best` writes the best (or a chosen) trial as a complete spec with provenance;
* :func:`train_final` fits that spec on all training data, evaluates it on the test split and saves it with
  ``save_pretrained``; optionally a fold ensemble, a tuned decision threshold and an int8 copy;
* :func:`verify_spec` re-runs an exported spec's recorded folds and compares the scores;
* :func:`load_model` / :func:`predict_file` use the saved folder.

``export`` reads the study through Optuna's public API; ``train`` fits with the same
:func:`~hft_search.training.fine_tune` (and :meth:`~hft_search.cv.CrossValidator.fit_fold` for the fold
models and ``verify``) as the search, so the final model is trained by the code the search scored.
"""

from hft_search.export._metrics import LABEL_METRICS, Threshold, classification_metrics, decide, tune_threshold
from hft_search.export._predict import SavedModel, load_model, predict_file, read_rows
from hft_search.export._quantize import INT8_SCHEMES, QuantizationReport, choose_scheme
from hft_search.export._spec import export_best, export_spec, pareto_table, spec_text
from hft_search.export._train import (
    FORMAT_VERSION,
    INT8_FOLDER,
    METADATA_FILE,
    TrainedModel,
    config_of,
    describe_trained,
    record_final_model,
    train_final,
)
from hft_search.export._verify import CUDA_TOLERANCE, FoldCheck, Verification, load_exported, verify_spec

__all__ = [
    "CUDA_TOLERANCE",
    "FORMAT_VERSION",
    "FoldCheck",
    "INT8_FOLDER",
    "INT8_SCHEMES",
    "LABEL_METRICS",
    "METADATA_FILE",
    "QuantizationReport",
    "SavedModel",
    "Threshold",
    "TrainedModel",
    "Verification",
    "choose_scheme",
    "classification_metrics",
    "config_of",
    "decide",
    "describe_trained",
    "export_best",
    "export_spec",
    "load_exported",
    "load_model",
    "pareto_table",
    "predict_file",
    "read_rows",
    "record_final_model",
    "spec_text",
    "train_final",
    "tune_threshold",
    "verify_spec",
]
