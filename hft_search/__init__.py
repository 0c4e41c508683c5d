"""hft_search: search the best hybrid fine-tuning configuration of a pretrained transformer.

The public API is re-exported here. Names are resolved lazily (PEP 562) so that ``hft-search validate`` or
``import hft_search`` for a spec check does not pay for importing torch and transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "HFTSearchError": "exceptions", "SpecError": "exceptions", "DataError": "exceptions",
    "ModelError": "exceptions", "StorageError": "exceptions", "TrialFailure": "exceptions",
    "ExportError": "exceptions", "ClusterError": "exceptions", "ConsecutiveFailures": "exceptions",
    "DeviceMemoryError": "exceptions", "OutputError": "exceptions", "DashboardError": "exceptions",
    # spec
    "StudySpec": "spec", "HybridConfig": "spec", "load_spec": "spec", "spec_from_dict": "spec",
    # data and models
    "load_data": "data", "load_base": "models", "model_info": "models",
    # studies
    "CrossValidator": "cv", "CVObjective": "objective", "suggest_config": "objective",
    "open_study": "study", "run_study": "study", "load_study": "study", "optimize": "workers", "run_worker": "study",
    "resolve_storage_url": "storage", "make_storage": "storage", "mask_url": "storage",
    "Lift": "comparison", "compute_lift": "comparison", "baseline_config": "baseline",
    "confirm_study": "confirm", "Confirmation": "confirm",
    # views
    "validate": "summary", "trials_table": "summary", "best_summary": "summary", "describe_best": "summary",
    # export, train, predict
    "export_best": "export", "export_spec": "export", "train_final": "export", "describe_trained": "export",
    "load_model": "export", "predict_file": "export", "SavedModel": "export", "TrainedModel": "export",
    "verify_spec": "export",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hft_search' has no attribute {name!r}")
    value = getattr(import_module(f"hft_search.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from hft_search.baseline import baseline_config
    from hft_search.comparison import Lift, compute_lift
    from hft_search.confirm import Confirmation, confirm_study
    from hft_search.cv import CrossValidator
    from hft_search.data import load_data
    from hft_search.exceptions import (
        ClusterError,
        ConsecutiveFailures,
        DashboardError,
        DataError,
        DeviceMemoryError,
        ExportError,
        HFTSearchError,
        ModelError,
        OutputError,
        SpecError,
        StorageError,
        TrialFailure,
    )
    from hft_search.export import (
        SavedModel,
        TrainedModel,
        describe_trained,
        export_best,
        export_spec,
        load_model,
        predict_file,
        train_final,
        verify_spec,
    )
    from hft_search.models import load_base, model_info
    from hft_search.objective import CVObjective, suggest_config
    from hft_search.spec import HybridConfig, StudySpec, load_spec, spec_from_dict
    from hft_search.storage import make_storage, mask_url, resolve_storage_url
    from hft_search.study import load_study, open_study, run_study, run_worker
    from hft_search.summary import best_summary, describe_best, trials_table, validate
    from hft_search.workers import optimize
