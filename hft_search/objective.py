"""The cross-validation objective: one Optuna trial = one hybrid configuration scored on k folds.

Flow of a trial (:meth:`CVObjective.__call__`):

1. :func:`suggest_config` samples the spec's search space. Group switches (``lora.enabled`` ...) are sampled
   first and a group's knobs only when it is on, so the sampler never sees inactive knobs.
2. For each fold of a ``StratifiedKFold`` (fixed by ``cv.seed``, so every trial sees the same folds), the
   engine fine-tunes a fresh copy of the base model on the fold's training part and scores its validation part.
   Teacher logits, importance scores and tokenized data come from the content-addressed cache: the teacher is
   fine-tuned once per fold per study, not once per trial.
3. Each fold score is reported with the fold index as the step; the pruner (Wilcoxon by default) may stop the
   trial between folds. The value is the mean fold score; provenance goes into the trial's user attributes
   (see ``docs/user_attrs.md``).

Every trial uses the same seeds (derived from ``cv.seed`` and the fold), i.e. common random numbers: two
trials differ by their configuration, not by their luck, which makes their comparison (and pruning) sharper.

Failures, and why they end as they do:

* a NaN or infinite loss ends the trial **PRUNED**: it is a property of the configuration (say, a learning
  rate far too high), so the sampler should see the trial as bad and steer away from that region;
* out-of-memory or any other exception in a fold ends it **FAIL**: a property of the machine or a bug, which
  should not bias the sampler. In both cases ``fail_reason`` is recorded and the study goes on.
"""

from __future__ import annotations

import gc
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import optuna
import torch
from sklearn.model_selection import StratifiedKFold

from hft_search.caching import Cache
from hft_search.data import LabelledData, TokenizedSplit, load_data, tokenize
from hft_search.exceptions import DataError, TrialFailure
from hft_search.models import BaseModel, load_base, load_tokenizer, resolve_source
from hft_search.spec import (
    SWITCHABLE_GROUPS,
    CategoricalDist,
    FloatDist,
    HybridConfig,
    IntDist,
    StudySpec,
    check_against_layers,
)
from hft_search.training import (
    FineTuneResult,
    compute_importance,
    compute_metric,
    fine_tune,
    predict_logits,
    resolve_device,
    teacher_config,
)

logger = logging.getLogger(__name__)

Fold = tuple[np.ndarray, np.ndarray]


def package_versions() -> dict[str, str]:
    """Versions that determine results, recorded in every trial and export."""
    versions = {"python": platform.python_version()}
    for package in ("hft_search", "torch", "transformers", "optuna", "peft", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def suggest_value(trial: optuna.Trial, name: str, dist: FloatDist | IntDist | CategoricalDist) -> Any:
    if isinstance(dist, FloatDist):
        return trial.suggest_float(name, *dist.bounds, log=dist.log, step=dist.step)
    if isinstance(dist, IntDist):
        return trial.suggest_int(name, *dist.bounds, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, dist.choices)


def suggest_config(trial: optuna.Trial, spec: StudySpec) -> HybridConfig:
    """Sample one configuration: group switches first, then only the knobs of the groups that are on."""
    values: dict[str, Any] = dict(spec.fixed)
    for group, decided in spec.enabled_groups().items():
        key = f"{group}.enabled"
        values[key] = bool(suggest_value(trial, key, spec.search_space[key])) if decided is None else decided
    for name, dist in spec.search_space.items():
        group = name.split(".", 1)[0]
        if name.endswith(".enabled") or (group in SWITCHABLE_GROUPS and not values[f"{group}.enabled"]):
            continue
        values[name] = suggest_value(trial, name, dist)
    return HybridConfig.from_flat(values)


def study_teacher_config(spec: StudySpec) -> HybridConfig:
    """The teacher's fine-tune for a whole study: the full model with the spec's *fixed* training knobs.

    Only values that are the same in every trial may shape the teacher, or it could not be shared between
    trials: a searched learning rate, say, applies to the student alone. The teacher is then fine-tuned once
    per fold per study.
    """
    pinned = {k: v for k, v in spec.fixed.items() if k.startswith("training.") or k == "distill.teacher_epochs"}
    return teacher_config(HybridConfig.from_flat(pinned))


def make_folds(labels: np.ndarray, spec: StudySpec) -> list[Fold]:
    """``StratifiedKFold`` splits as the spec asks; each class needs at least ``cv.folds`` rows."""
    counts = np.bincount(labels)
    if counts.min() < spec.cv.folds:
        raise DataError(
            f"cv.folds: {spec.cv.folds} folds need at least {spec.cv.folds} rows of every class, but one class has "
            f"{counts.min()}; lower cv.folds or add rows"
        )
    splitter = StratifiedKFold(spec.cv.folds, shuffle=spec.cv.shuffle,
                               random_state=spec.cv.seed if spec.cv.shuffle else None)
    return list(splitter.split(np.zeros(len(labels)), labels))


@dataclass
class FoldOutcome:
    score: float
    seconds: float
    result: FineTuneResult
    teacher_score: float | None


class CVObjective:
    """Callable objective for ``study.optimize``: k-fold CV of one sampled hybrid configuration.

    Construction does the per-process work once: read and check the data, load the base model, tokenize, and
    build the folds. ``data`` and ``base`` may be passed in to share them between objectives.
    """

    def __init__(self, spec: StudySpec, *, cache: Cache | None = None, data: LabelledData | None = None,
                 base: BaseModel | None = None, progress: bool = False) -> None:
        self.spec = spec
        self.cache = cache if cache is not None else Cache(None)
        self.data = data if data is not None else load_data(spec.data)
        self.base = base if base is not None else load_base(spec.model.name, self.data.label_names, spec.model.revision)
        check_against_layers(spec, self.base.num_layers)
        self.device = resolve_device(spec.device)
        self.folds = make_folds(self.data.train.labels, spec)
        self.tokens = self._tokenized()
        self.versions = package_versions()
        self.progress = progress
        self.multi_objective = spec.study.objectives != "score"

    # -- cached per-study inputs --------------------------------------------------------------------------

    def _model_key(self) -> dict[str, Any]:
        return {"model": resolve_source(self.spec.model.name), "revision": self.spec.model.revision,
                "max_length": self.spec.model.max_length, "data": self.data.fingerprint}

    def _tokenized(self) -> TokenizedSplit:
        def compute() -> dict[str, torch.Tensor]:
            tokenizer = load_tokenizer(self.spec.model.name, self.spec.model.revision)
            return tokenize(self.data.train, tokenizer, self.spec.model.max_length).to_dict()

        return TokenizedSplit.from_dict(self.cache.get_or_compute("tokenized", self._model_key(), compute))

    def _fold_key(self, fold: int) -> dict[str, Any]:
        return {**self._model_key(), "fold": fold, "folds": self.spec.cv.folds, "cv_seed": self.spec.cv.seed,
                "shuffle": self.spec.cv.shuffle}

    def _importance(self, fold: int, config: HybridConfig, train: TokenizedSplit) -> dict[str, torch.Tensor]:
        imp = config.importance
        parts = {**self._fold_key(fold), "score": imp.score, "batches": imp.batches,
                 "batch_size": config.training.batch_size, "seed": self._seed(fold)}

        def compute() -> dict[str, torch.Tensor]:
            # Scored on the very initial model that fine_tune trains (same seed, so the same new head).
            model = self.base.fresh(self._seed(fold))
            return compute_importance(model, train, imp, batch_size=config.training.batch_size,
                                      device=self.device, seed=self._seed(fold))

        return self.cache.get_or_compute("importance", parts, compute)

    def _teacher(self, fold: int, config: HybridConfig, train: TokenizedSplit,
                 valid: TokenizedSplit) -> tuple[torch.Tensor, float]:
        """Teacher logits on the fold's training rows and the teacher's validation score (cached per fold).

        The teacher never sees the fold's validation part: it trains all its epochs on the training part
        (no early stopping), and the validation part only scores it.
        """
        path = config.distill.teacher
        teacher = study_teacher_config(self.spec)
        parts = {**self._fold_key(fold), "teacher": resolve_source(path) if path else teacher.training.model_dump(),
                 "seed": self._seed(fold)}

        def compute() -> dict[str, Any]:
            if path:
                model = load_base(path, self.data.label_names).template
            else:
                model = fine_tune(self.base, teacher, train, None, metric=self.spec.cv.metric,
                                  seed=self._seed(fold), device=self.device).model
            model.eval()
            logits = predict_logits(model, train, device=self.device)
            score = self._score(valid, torch.softmax(predict_logits(model, valid, device=self.device), dim=-1))
            del model
            _release_memory()
            return {"logits": logits, "score": float(score)}

        entry = self.cache.get_or_compute("teacher_logits", parts, compute)
        return entry["logits"], float(entry["score"])

    # -- one trial ----------------------------------------------------------------------------------------

    def _seed(self, fold: int) -> int:
        return self.spec.cv.seed * 1000 + fold

    def _score(self, valid: TokenizedSplit, probs: torch.Tensor) -> float:
        return compute_metric(self.spec.cv.metric, valid.labels.numpy(), probs.numpy())

    def fit_fold(self, fold: int, config: HybridConfig) -> FoldOutcome:
        """Fine-tune one configuration on one fold (teacher and importance from the cache); keeps the model."""
        train_idx, valid_idx = self.folds[fold]
        train, valid = self.tokens.subset(train_idx), self.tokens.subset(valid_idx)
        start = time.perf_counter()
        teacher_logits, teacher_score = (None, None)
        if config.distill.enabled:
            teacher_logits, teacher_score = self._teacher(fold, config, train, valid)
        scores = self._importance(fold, config, train) if config.importance.enabled else None
        result = fine_tune(self.base, config, train, valid, metric=self.spec.cv.metric, seed=self._seed(fold),
                           device=self.device, teacher_logits=teacher_logits, importance_scores=scores)
        return FoldOutcome(result.score, time.perf_counter() - start, result, teacher_score)

    def _record(self, trial: optuna.Trial, config: HybridConfig, outcomes: list[FoldOutcome]) -> None:
        scores = [o.score for o in outcomes]
        attrs: dict[str, Any] = {
            "metric": self.spec.cv.metric,
            "fold_scores": scores,
            "fold_times_s": [round(o.seconds, 3) for o in outcomes],
            "seed": self.spec.cv.seed,
            "device": str(self.device),
            "versions": self.versions,
            "data_fingerprint": self.data.fingerprint,
            "config": config.flat(),
        }
        if outcomes:
            last = outcomes[-1].result
            cuts = [o.result.importance_cut for o in outcomes if o.result.importance_cut is not None]
            attrs.update(
                score_mean=float(np.mean(scores)),
                score_std=float(np.std(scores)),
                trainable_params=int(last.trainable_params),
                total_params=int(last.total_params),
                trainable_fraction=float(np.mean([o.result.trainable_fraction for o in outcomes])),
                student_params=int(last.total_params),
                importance_cut=float(np.mean(cuts)) if cuts else None,
                teacher_scores=[o.teacher_score for o in outcomes] if config.distill.enabled else None,
                peak_memory_mb=float(max(o.result.peak_memory_mb for o in outcomes)),
            )
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        config = suggest_config(trial, self.spec)
        outcomes: list[FoldOutcome] = []
        try:
            for fold in self._fold_range(trial):
                outcome = self.fit_fold(fold, config)
                outcomes.append(outcome)
                del outcome.result.model
                _release_memory()
                if math.isnan(outcome.score):
                    raise TrialFailure(f"fold {fold} produced a NaN score")
                if not self.multi_objective:
                    trial.report(outcome.score, fold)
                    if trial.should_prune():
                        _fail(trial, f"pruned after fold {fold} ({self.spec.study.pruner})")
                        raise optuna.TrialPruned(f"pruned after fold {fold}")
        except TrialFailure as failure:
            _fail(trial, f"{failure.reason} (fold {len(outcomes)})")
            raise optuna.TrialPruned(failure.reason) from None
        except torch.OutOfMemoryError as error:
            _fail(trial, f"out of memory in fold {len(outcomes)}: {str(error).splitlines()[0][:200]}", kind="oom")
            raise TrialFailure(f"out of memory in fold {len(outcomes)}") from error
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as error:  # one broken configuration must not end the study
            _fail(trial, f"{type(error).__name__} in fold {len(outcomes)}: {str(error).splitlines()[0][:300]}",
                  kind="exception")
            raise TrialFailure(f"{type(error).__name__}: {error}") from error
        finally:
            self._record(trial, config, outcomes)
            _release_memory()
        mean = float(np.mean([o.score for o in outcomes]))
        if self.spec.study.objectives == "score+trainable_fraction":
            return mean, trial.user_attrs["trainable_fraction"]
        if self.spec.study.objectives == "score+student_params":
            return mean, float(trial.user_attrs["student_params"])
        return mean

    def _fold_range(self, trial: optuna.Trial) -> Any:
        folds = range(len(self.folds))
        if not self.progress:
            return folds
        from tqdm.auto import tqdm

        return tqdm(folds, desc=f"trial {trial.number} folds", leave=False, file=sys.stderr)


def _fail(trial: optuna.Trial, reason: str, kind: str | None = None) -> None:
    """Record why a trial stops; ``kind`` ("oom" or "exception") for a FAIL trial, read by the worker loop's
    fail-fast rule (``study.max_consecutive_failures``)."""
    logger.warning("trial %d: %s", trial.number, reason)
    trial.set_user_attr("fail_reason", reason)
    if kind is not None:
        trial.set_user_attr("failure_kind", kind)


def _release_memory() -> None:
    """Free what a fold left behind, so memory does not grow from trial to trial."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

