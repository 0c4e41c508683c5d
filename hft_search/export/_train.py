"""``hft-search train``: fit an exported configuration on all training data, evaluate it, and save it.

What the output folder holds (written atomically: built in a temporary sibling, then renamed into place):

* ``config.json``, ``model.safetensors``, tokenizer files — ``save_pretrained`` of the trained model with LoRA
  merged into its weights and, when distilling into a truncated student, as the smaller model it is. The
  tokenizer's ``model_max_length`` is the spec's ``model.max_length``, so plain ``transformers`` truncates the
  way training did;
* ``hft_search.json`` — format version, the spec (with its provenance), the test metrics, and when asked the
  fold ensemble's metrics, the tuned decision threshold and the int8 comparison;
* ``int8/`` (``--quantize int8``) — the int8 model, loadable with ``from_pretrained`` alone.

What is fitted is what the search scored: the configuration exported with every knob pinned, its teacher
fitted with the same ``distill.teacher_*`` knobs as in the trials, and ``training.epochs`` pinned by ``export``
to the folds' median best epoch (the folds' scores came from their best epoch's weights), trained on the
learning-rate schedule of the searched epochs (:func:`fit_final`): on a fold's training part with the fold's
seed, the final fit gives that fold's best-epoch weights bit for bit (CPU) when its best epoch is the median.

Why the fold runs are shared: a fold ensemble and a tuned threshold both need the k fold models of the best
configuration (:meth:`CrossValidator.fit_fold`, the very code path of the search). Asked together, they reuse the
same k fine-tunes: the threshold from the out-of-fold probabilities, the ensemble from the fold models'
test probabilities.
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hft_search.attrs import FINAL_MODEL_ATTR
from hft_search.cv import (
    CrossValidator,
    TeacherOutputs,
    fit_teacher,
    package_versions,
    student_split,
    teacher_setting,
)
from hft_search.data import LabelledData, TokenizedSplit, load_data, tokenize
from hft_search.exceptions import ExportError
from hft_search.export._metrics import Threshold, check_tunable, classification_metrics, score, tune_threshold
from hft_search.export._quantize import (
    Footprint,
    Int8Scheme,
    QuantizationReport,
    choose_scheme,
    cpu_latency_ms,
    quantize_folder,
    weights_size_mb,
)
from hft_search.files import atomic_folder, check_output, check_writable, write_text_atomic
from hft_search.inputs import spec_inputs, storage_inputs
from hft_search.models import BaseModel, load_base, load_tokenizer
from hft_search.spec import HybridConfig, StudySpec, check_against_layers
from hft_search.storage import mask_url, resolve_storage_url
from hft_search.study import default_cache, load_study
from hft_search.training import FineTuneResult, fine_tune, predict_logits, resolve_device

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of ``hft_search.json``; bumped when its keys change meaning."""
METADATA_FILE = "hft_search.json"
INT8_FOLDER = "int8"


def searched_epochs(spec: StudySpec) -> int:
    """The epochs the search ran each fold for: ``provenance.cv_epochs`` when ``export`` pinned the final
    fit's epochs, else ``training.epochs``."""
    epochs = (spec.provenance or {}).get("cv_epochs")
    return int(epochs) if epochs is not None else config_of(spec).training.epochs


def search_setting(spec: StudySpec) -> tuple[StudySpec, HybridConfig]:
    """The spec and configuration as the search cross-validated them: ``training.epochs`` back at the
    searched value (:func:`searched_epochs`)."""
    config = config_of(spec)
    epochs = searched_epochs(spec)
    if epochs == config.training.epochs:
        return spec, config
    fixed = {**spec.fixed, "training.epochs": epochs}
    return spec.model_copy(update={"fixed": fixed}), config_of(spec.model_copy(update={"fixed": fixed}))


def fit_final(spec: StudySpec, base: BaseModel, train: TokenizedSplit, *, seed: int, device: torch.device,
              teacher_logits: torch.Tensor | None = None, teacher_states: torch.Tensor | None = None,
              merge_lora: bool = False) -> FineTuneResult:
    """The final fit of an exported spec on ``train`` (no validation): its configuration for the pinned
    ``training.epochs``, on the learning-rate schedule of the searched run (:func:`searched_epochs`).

    Why that schedule: each fold was scored at its best epoch of a run laid out for the searched epochs (warm-up
    and linear decay over all of them). A run laid out for the pinned epochs alone would compress warm-up and
    decay and train something nobody scored; this one is, step for step, a fold's run up to the pinned epoch.
    """
    return fine_tune(base, config_of(spec), train, None, metric=spec.cv.metric, seed=seed, device=device,
                     teacher_logits=teacher_logits, teacher_states=teacher_states, merge_lora=merge_lora,
                     schedule_epochs=searched_epochs(spec))


def config_of(spec: StudySpec) -> HybridConfig:
    """The one configuration a spec without search space describes (group switches decided by the spec)."""
    if spec.search_space:
        raise ExportError(f"spec {spec.name!r} still searches {', '.join(spec.search_space)}; train needs one "
                          "configuration: export a trial first (hft-search export --study NAME -o best.yaml)")
    values = dict(spec.fixed)
    values.update({f"{group}.enabled": on for group, on in spec.enabled_groups().items()})
    return HybridConfig.from_flat(values)


@dataclass
class TrainedModel:
    """What ``train`` produced: the saved folder, its metadata, and the test probabilities it evaluated."""

    path: Path
    metadata: dict[str, Any]
    test_probs: np.ndarray | None


@dataclass
class _Inputs:
    spec: StudySpec
    config: HybridConfig
    data: LabelledData
    base: BaseModel
    tokenizer: Any
    train: TokenizedSplit
    test: TokenizedSplit | None
    device: torch.device
    transfer: TokenizedSplit | None  # data.unlabeled, tokenized


@dataclass
class _FoldRuns:
    oof_probs: np.ndarray
    fold_scores: list[float]
    test_probs: np.ndarray | None  # mean over the fold models (None without a test split or ensemble)


def _prepare(spec: StudySpec, source: str | None) -> _Inputs:
    config = config_of(spec)
    data = load_data(spec.data)
    base = load_base(spec.model.name, data.label_names, spec.model.revision, spec.model.pooling)
    check_against_layers(spec, base.num_layers, source=source)
    tokenizer = copy.deepcopy(load_tokenizer(spec.model.name, spec.model.revision))  # the cached one is shared
    tokenizer.model_max_length = spec.model.max_length  # saved with it: plain transformers truncates as trained
    test = tokenize(data.test, tokenizer, spec.model.max_length) if data.test is not None else None
    transfer = tokenize(data.unlabeled, tokenizer, spec.model.max_length) if data.unlabeled is not None else None
    return _Inputs(spec, config, data, base, tokenizer, tokenize(data.train, tokenizer, spec.model.max_length),
                   test, resolve_device(spec.device), transfer)


def final_teacher(spec: StudySpec, base: BaseModel, train: TokenizedSplit, *, labels: tuple[str, ...],
                  device: torch.device) -> torch.nn.Module:
    """The teacher ``train`` distils from: the checkpoint, or the full model fine-tuned on ``train`` as in the
    trials (the same ``distill.teacher_*`` knobs and code; seed ``distill.teacher_seed``, else ``cv.seed``)."""
    config = config_of(spec)
    if not config.distill.teacher:
        logger.info("fine-tuning the teacher on %d training rows", len(train))
    return fit_teacher(base, config, train, labels=labels, metric=spec.cv.metric, seed=spec.cv.seed, device=device)


def _teacher(inputs: _Inputs, student_train: TokenizedSplit) -> TeacherOutputs | None:
    """The teacher's outputs (:func:`final_teacher`, fitted on the labelled rows) on the student's rows: all
    training rows, then ``data.unlabeled``; None when nothing is distilled."""
    distill = inputs.config.distill
    if not (distill.enabled and (distill.alpha > 0 or distill.hidden_weight > 0)):
        return None
    model = final_teacher(inputs.spec, inputs.base, inputs.train, labels=inputs.data.label_names,
                          device=inputs.device)
    outputs = TeacherOutputs.of(model, student_train, inputs.device).needed(inputs.config)
    del model
    gc.collect()
    return outputs


def _probs(model: torch.nn.Module, split: TokenizedSplit, device: torch.device) -> np.ndarray:
    return predict_logits(model, split, device=device).softmax(-1).numpy()


def _fold_runs(inputs: _Inputs, ensemble: bool) -> _FoldRuns:
    """The k fold fine-tunes of the configuration: out-of-fold probabilities, and test probabilities averaged.

    The folds train the configuration as the search did, for ``provenance.cv_epochs`` epochs with early
    stopping, not the final fit's pinned epochs.
    """
    cache = default_cache(inputs.spec, resolve_storage_url(None, inputs.spec.study.storage))
    cv_spec, config = search_setting(inputs.spec)
    cv = CrossValidator(cv_spec, cache=cache, data=inputs.data, base=inputs.base)
    oof = np.zeros((len(inputs.data.train), inputs.data.num_labels), dtype=np.float32)
    scores, test_sum = [], None
    for fold, (_, valid_idx) in enumerate(cv.folds):
        result = cv.fit_fold(fold, config)
        logger.info("fold %d of %d: %s %.4f", fold + 1, len(cv.folds), inputs.spec.cv.metric, result.score)
        oof[valid_idx] = result.fit.valid_probs.numpy()
        scores.append(float(result.score))
        if ensemble and inputs.test is not None:
            probs = _probs(result.fit.model, inputs.test, inputs.device)
            test_sum = probs if test_sum is None else test_sum + probs
        del result
        gc.collect()
    return _FoldRuns(oof, scores, None if test_sum is None else test_sum / len(cv.folds))


def _quantize(inputs: _Inputs, folder: Path, fp32_model: torch.nn.Module, scheme: Int8Scheme,
              threshold: float | None) -> QuantizationReport:
    """Write ``folder/int8`` and compare size, test score and CPU latency before and after."""
    chosen, reason = choose_scheme(scheme)
    int8_dir = folder / INT8_FOLDER
    int8_model = quantize_folder(folder, int8_dir, chosen)
    inputs.tokenizer.save_pretrained(int8_dir)
    timing = inputs.test if inputs.test is not None else inputs.train
    metric = inputs.spec.cv.metric

    def footprint(model: torch.nn.Module, path: Path) -> Footprint:
        test_score = None
        if inputs.test is not None:
            probs = _probs(model, inputs.test, torch.device("cpu"))
            test_score = score(metric, inputs.test.labels.numpy(), probs, threshold)
        return Footprint(weights_size_mb(path), cpu_latency_ms(model, timing), test_score)

    return QuantizationReport(chosen, reason, INT8_FOLDER, min(32, len(timing)), torch.get_num_threads(), metric,
                              footprint(fp32_model, folder), footprint(int8_model, int8_dir))


def _evaluate(inputs: _Inputs, probs: np.ndarray | None, threshold: float | None) -> dict[str, Any] | None:
    if probs is None or inputs.test is None:
        return None
    return classification_metrics(inputs.test.labels.numpy(), probs, inputs.data.label_names,
                                  inputs.spec.cv.metric, threshold)


def _threshold_entry(inputs: _Inputs, tuned: Threshold, test_probs: np.ndarray | None) -> dict[str, Any]:
    entry = tuned.to_dict()
    if test_probs is not None and inputs.test is not None:
        labels = inputs.test.labels.numpy()
        entry["test_score"] = score(tuned.metric, labels, test_probs, tuned.value)
        entry["test_score_argmax"] = score(tuned.metric, labels, test_probs)
    return entry


def _metadata(inputs: _Inputs, fit: FineTuneResult, rows: dict[str, Any]) -> dict[str, Any]:
    spec = inputs.spec
    dump = spec.model_dump(mode="json")  # passwords masked by their type
    return {
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "name": spec.name,
        "labels": list(inputs.data.label_names),
        "text_column": spec.data.text_column,
        "text_pair_column": spec.data.text_pair_column,
        "max_length": spec.model.max_length,
        "spec": dump,
        "provenance": dump["provenance"],
        "config": inputs.config.flat(),
        "training": {"rows": len(inputs.train), "seed": spec.cv.seed, "device": str(inputs.device),
                     "epochs": len(fit.history), "schedule_epochs": searched_epochs(spec),
                     "train_time_s": fit.train_time_s,
                     "trainable_params": fit.trainable_params, "total_params": fit.total_params,
                     "trainable_fraction": fit.trainable_fraction, "data_fingerprint": inputs.data.fingerprint},
        "teacher": (teacher_setting(inputs.config, spec.cv.seed) if inputs.config.distill.enabled
                    and (inputs.config.distill.alpha > 0 or inputs.config.distill.hidden_weight > 0) else None),
        "versions": package_versions(),
        **rows,
    }


def train_final(spec: StudySpec, output: str | Path, *, quantize: Literal["int8"] | None = None,
                int8_scheme: Int8Scheme = "auto", ensemble_folds: bool = False, tune_threshold_for: str | None = None,
                force: bool = False, storage: str | None = None,
                spec_file: str | Path | None = None) -> TrainedModel:
    """Fit ``spec``'s configuration on all training data, evaluate on its test split, save to ``output``.

    Args:
        spec: a spec without search space, typically written by :func:`export_best`.
        output: the model folder; an existing non-empty one is replaced only with ``force``.
        quantize: ``"int8"`` also writes ``output/int8`` and compares size, score and CPU latency.
        int8_scheme: ``auto`` (by the CPU), ``dynamic`` or ``weight_only``; see :mod:`._quantize`.
        ensemble_folds: also fit the k fold models and evaluate their averaged probabilities on the test split.
        tune_threshold_for: for a binary task, tune the decision threshold for this metric on out-of-fold
            probabilities of the k fold models; ``predict`` then uses it.
        storage: where the study named by the spec's provenance lives (default: the provenance's URL); the
            final metrics are recorded there as the study attribute ``final_model`` when it is reachable.
        spec_file: the file ``spec`` was read from; ``output`` may not hold it (nor any other input, see
            :mod:`hft_search.inputs`).

    Raises:
        OutputError: ``output`` would replace an input or another kind of entry, or cannot be written (checked
            before the fit).
    """
    study_url = storage or (spec.provenance or {}).get("storage")
    output = check_output(output, force=force, kind="folder",
                          inputs=[*spec_inputs(spec, spec_file), *storage_inputs(study_url)])
    check_writable(output)
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize {quantize}: only int8 is supported")
    inputs = _prepare(spec, None if spec_file is None else str(spec_file))
    if tune_threshold_for is not None:
        check_tunable(tune_threshold_for, inputs.data.label_names)
    if inputs.test is None:
        logger.warning("spec %s has no test split (data.test / data.test_split): nothing to evaluate on", spec.name)
    folds = _fold_runs(inputs, ensemble_folds) if ensemble_folds or tune_threshold_for else None
    tuned = None
    if tune_threshold_for is not None:
        tuned = tune_threshold(inputs.data.train.labels, folds.oof_probs, tune_threshold_for, inputs.data.label_names)
    cut = tuned.value if tuned is not None else None

    logger.info("fitting the configuration on all %d training rows", len(inputs.train))
    student_train = student_split(inputs.train, inputs.transfer, inputs.config, inputs.tokenizer.pad_token_id)
    teacher = _teacher(inputs, student_train)
    fit = fit_final(spec, inputs.base, student_train, seed=spec.cv.seed, device=inputs.device,
                    teacher_logits=None if teacher is None else teacher.logits,
                    teacher_states=None if teacher is None else teacher.states, merge_lora=True)
    test_probs = _probs(fit.model, inputs.test, inputs.device) if inputs.test is not None else None
    rows: dict[str, Any] = {
        "metrics": _evaluate(inputs, test_probs, cut),
        "ensemble": None if not ensemble_folds else {
            "folds": len(folds.fold_scores), "fold_scores": folds.fold_scores,
            "metrics": _evaluate(inputs, folds.test_probs, cut)},
        "threshold": None if tuned is None else _threshold_entry(inputs, tuned, test_probs),
        "quantized": None,
    }
    with atomic_folder(output) as staging:
        fit.model.save_pretrained(staging)
        inputs.tokenizer.save_pretrained(staging)
        if quantize == "int8":
            rows["quantized"] = _quantize(inputs, staging, fit.model, int8_scheme, cut).to_dict()
        metadata = _metadata(inputs, fit, rows)
        write_text_atomic(staging / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    logger.info("saved the model to %s", output)
    record_final_model(spec, output, metadata, storage)
    return TrainedModel(output, metadata, test_probs)


def record_final_model(spec: StudySpec, path: Path, metadata: dict[str, Any], storage: str | None = None) -> bool:
    """Store the final metrics in the study named by the spec's provenance (``final_model``); False on failure.

    Reaching the study is a courtesy to the report, not part of training: any failure is a logged warning.
    """
    provenance = spec.provenance or {}
    url = storage or provenance.get("storage")
    if not provenance.get("study") or not url or metadata["metrics"] is None:
        return False
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        logger.warning("not recording the final model: the study's SQLite file %s does not exist here",
                       url.removeprefix("sqlite:///"))
        return False  # opening it would create an empty database
    keys = ("accuracy", "f1_macro", "classification_report", "confusion_matrix", "labels")
    value = {"path": str(Path(path).resolve()), "metrics": {k: metadata["metrics"][k] for k in keys},
             "quantized": metadata["quantized"]}
    try:
        load_study(provenance["study"], url).set_user_attr(FINAL_MODEL_ATTR, value)
    except Exception as error:  # noqa: BLE001 - any storage problem must not fail a finished training
        logger.warning("could not record the final model in study %r at %s: %s", provenance["study"],
                       mask_url(url), str(error).splitlines()[0][:300])
        return False
    return True


def _scores_line(metrics: dict[str, Any]) -> str:
    """Accuracy and macro-F1, then the study's metric when it is another one."""
    line = f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['f1_macro']:.4f}"
    if metrics["metric"] not in ("accuracy", "f1_macro"):
        line += f"  {metrics['metric']} {metrics['score']:.4f}"
    return line


def describe_trained(trained: TrainedModel) -> str:
    """What ``hft-search train`` prints: where the model is, its test metrics and the optional comparisons."""
    meta = trained.metadata
    lines = [f"saved to {trained.path}"]
    training, note = meta["training"], (meta.get("provenance") or {}).get("epochs_note")
    lines.append(f"trained {training['epochs']} epoch(s) on {training['rows']} rows"
                 + (f" ({note})" if note else ""))
    metrics = meta["metrics"]
    if metrics is None:
        lines.append("no test split: the model was not evaluated")
    else:
        lines += [f"test ({metrics['rows']} rows): {_scores_line(metrics)}",
                  metrics["classification_report_text"].rstrip(),
                  "confusion matrix (rows: true, columns: predicted; " + ", ".join(metrics["labels"]) + "):",
                  *(f"  {row}" for row in metrics["confusion_matrix"])]
    if meta["ensemble"] is not None and meta["ensemble"]["metrics"] is not None:
        ens = meta["ensemble"]["metrics"]
        lines.append(f"fold ensemble ({meta['ensemble']['folds']} models): {_scores_line(ens)}"
                     + (f"   single model: {metrics['metric']} {metrics['score']:.4f}" if metrics else ""))
    if meta["threshold"] is not None:
        thr = meta["threshold"]
        lines.append(f"decision threshold p({thr['positive_label']}) >= {thr['value']:.4f}, tuned for "
                     f"{thr['metric']} on {thr['rows']} out-of-fold rows: {thr['oof_score']:.4f} "
                     f"(argmax {thr['oof_score_argmax']:.4f})")
    if meta["quantized"] is not None:
        lines.append(QuantizationReport.from_dict(meta["quantized"]).table())
    return "\n".join(lines)
