"""The Optuna adapter: :class:`CVObjective` turns a trial into k folds of the cross-validator, its reports
into pruning decisions, its failures into trial states, and its results into user attributes.

Why a module of its own: it is the one place that knows both Optuna trials and the cross-validator; sampling
(:mod:`._sampling`) and repeat detection (:mod:`._repeats`) are what it calls before fitting anything.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

import numpy as np
import optuna
import torch

from hft_search.attrs import FAIL_REASON_ATTR, FAILURE_KIND_ATTR, FOLD_EPOCHS_ATTR, TORCH_THREADS_ATTR
from hft_search.caching import Cache
from hft_search.cv import CrossValidator, FoldResult, package_versions, release_memory, teacher_setting
from hft_search.data import LabelledData
from hft_search.exceptions import DeviceMemoryError, TrainingDiverged, TrialFailure, error_text
from hft_search.models import BaseModel
from hft_search.objective._repeats import repeat_verdict, repeated_trial
from hft_search.objective._sampling import trial_config
from hft_search.pruning import ReportSchedule
from hft_search.spec import HybridConfig, StudySpec
from hft_search.training import EpochCallback

logger = logging.getLogger(__package__)  # "hft_search.objective": the logger users know the trials' lines by


def trial_attributes(spec: StudySpec, config: HybridConfig, results: list[FoldResult]) -> dict[str, Any]:
    """The user attributes of a trial (``docs/user_attrs.md``): what ``export``, ``verify`` and reports read."""
    scores = [r.score for r in results]
    attrs: dict[str, Any] = {
        "metric": spec.cv.metric,
        "fold_scores": scores,
        "fold_best_epochs": [r.best_epoch for r in results],
        "fold_epochs_run": [r.epochs_run for r in results],
        "fold_times_s": [round(r.seconds, 3) for r in results],
        "seeds": [r.seed for r in results],
        "fold_sizes": [list(r.rows) for r in results],
        "cv_repeats": spec.cv.repeats,
        "config": config.flat(),
    }
    if not results:
        return attrs
    last = results[-1].fit
    cuts = [r.fit.importance_cut for r in results if r.fit.importance_cut is not None]
    attrs.update(
        score_mean=float(np.mean(scores)),
        score_std=float(np.std(scores)),
        trainable_params=int(last.trainable_params),
        total_params=int(last.total_params),
        trainable_fraction=float(np.mean([r.fit.trainable_fraction for r in results])),
        student_params=int(last.model_params),
        importance_cut=float(np.mean(cuts)) if cuts else None,
        peak_memory_mb=float(max(r.fit.peak_memory_mb for r in results)),
        learning_rate_effective=float(np.mean([r.fit.learning_rate for r in results])),
    )
    if config.distill.enabled:
        setting = {k: v for k, v in teacher_setting(config, results[0].seed).items() if k != "seed"}
        if "checkpoint" not in setting:
            setting["seeds"] = [teacher_setting(config, r.seed)["seed"] for r in results]
        attrs.update(teacher=setting, teacher_scores=[r.teacher_score for r in results])
    return attrs


class CVObjective:
    """Callable objective for ``study.optimize``: k-fold CV of one sampled hybrid configuration.

    The :class:`~hft_search.cv.CrossValidator` is built once per process (data, model, tokens, folds);
    ``data`` and ``base`` may be passed in to share them between objectives.
    """

    def __init__(self, spec: StudySpec, *, cache: Cache | None = None, data: LabelledData | None = None,
                 base: BaseModel | None = None, progress: bool = False) -> None:
        self.spec = spec
        self.cv = CrossValidator(spec, cache=cache, data=data, base=base)
        self.versions = package_versions()
        self.progress = progress
        self.multi_objective = spec.study.objectives != "score"
        self.schedule = ReportSchedule.for_spec(spec)

    def _record(self, trial: optuna.Trial, config: HybridConfig, results: list[FoldResult]) -> None:
        attrs = trial_attributes(self.spec, config, results)
        attrs.update(device=str(self.cv.device), versions=self.versions, data_fingerprint=self.cv.data.fingerprint)
        attrs[TORCH_THREADS_ATTR] = torch.get_num_threads()  # CPU results depend on it: verify re-runs with it
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("pooling", self.cv.pooling)  # what the head read; export pins it as model.pooling

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        config = trial_config(trial, self.spec)
        earlier = None if self.spec.study.allow_repeats else repeated_trial(trial, self.cv.pooling)
        if earlier is not None:
            return repeat_verdict(trial, earlier)
        results: list[FoldResult] = []
        spent = [0]  # fold-epochs trained, pruned folds included
        try:
            for fold in self._fold_range(trial):
                result = self.cv.fit_fold(fold, config, on_epoch=self._epoch_reporter(trial, fold, results, spent))
                del result.fit.model
                results.append(result)
                release_memory()
                if math.isnan(result.score):
                    raise TrainingDiverged(f"fold {fold} produced a NaN score")
                self._fold_reports(trial, fold, result, results)
        except TrainingDiverged as failure:
            _fail(trial, f"{failure.reason} (fold {len(results)})")
            raise optuna.TrialPruned(failure.reason) from None
        except (torch.OutOfMemoryError, DeviceMemoryError) as error:
            _fail(trial, f"out of memory in fold {len(results)}: {error_text(error)}", kind="oom")
            raise TrialFailure(f"out of memory in fold {len(results)}") from error
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as error:  # one broken configuration must not end the study
            _fail(trial, f"{type(error).__name__} in fold {len(results)}: {error_text(error)}", kind="exception")
            raise TrialFailure(f"{type(error).__name__}: {error}") from error
        finally:
            self._record(trial, config, results)
            trial.set_user_attr(FOLD_EPOCHS_ATTR, spent[0])
            release_memory()
        mean = float(np.mean([r.score for r in results]))
        if self.spec.study.objectives == "score+trainable_fraction":
            return mean, trial.user_attrs["trainable_fraction"]
        if self.spec.study.objectives == "score+student_params":
            return mean, float(trial.user_attrs["student_params"])
        return mean

    def _epoch_reporter(self, trial: optuna.Trial, fold: int, done: list[FoldResult],
                        spent: list[int]) -> EpochCallback:
        """Count the epochs trained (``spent``, the trial's cost in fold-epochs, pruned folds included) and, on a
        fold-epoch schedule, report after every epoch and let the pruner stop the fine-tune.

        Step ``fold * max_epochs + epoch`` is the same fold and epoch in every trial (common random numbers);
        the value is the running CV estimate there: the mean of the finished folds' scores and the current
        fold's best score so far (see :mod:`hft_search.pruning`).
        """
        best = -math.inf  # every metric is better when higher (the spec refuses direction: minimize)

        def report(epoch: int, score: float) -> None:
            nonlocal best
            spent[0] += 1
            best = max(best, score)
            if self.multi_objective or not self.schedule.per_epoch or not math.isfinite(best):
                return
            self._report(trial, self.schedule.step(fold, epoch), float(np.mean([r.score for r in done] + [best])),
                         f"at fold {fold} epoch {epoch}")

        return report

    def _fold_reports(self, trial: optuna.Trial, fold: int, result: FoldResult, done: list[FoldResult]) -> None:
        """The reports due once a fold has ended (``done`` includes it).

        On a fold-epoch schedule, the steps of the epochs the fold did not train (it stopped early, or the
        trial trains fewer than ``max_epochs``): the fold's score is final, so the running estimate there is
        the mean of the finished folds; every trial thereby reports at every step (dense steps). On a per-fold
        schedule, the fold's score at step ``fold``.
        """
        if self.multi_objective:
            return
        if not self.schedule.per_epoch:
            self._report(trial, self.schedule.step(fold), result.score, f"after fold {fold}")
            return
        estimate = float(np.mean([r.score for r in done]))
        for epoch in range(result.epochs_run + 1, self.schedule.max_epochs + 1):
            self._report(trial, self.schedule.step(fold, epoch), estimate,
                         f"at fold {fold} epoch {epoch} (the fold ended after epoch {result.epochs_run})")

    def _report(self, trial: optuna.Trial, step: int, value: float, where: str) -> None:
        trial.report(value, step)
        if trial.should_prune():
            _fail(trial, f"pruned {where} ({self.spec.study.pruner})")
            raise optuna.TrialPruned(f"pruned {where}")

    def _fold_range(self, trial: optuna.Trial) -> Any:
        folds = range(len(self.cv.folds))
        if not self.progress:
            return folds
        from tqdm.auto import tqdm

        return tqdm(folds, desc=f"trial {trial.number} folds", leave=False, file=sys.stderr)


def _fail(trial: optuna.Trial, reason: str, kind: str | None = None) -> None:
    """Record why a trial stops; ``kind`` ("oom" or "exception") for a FAIL trial, read by the worker loop's
    fail-fast rule (``study.max_consecutive_failures``: out-of-memory does not count towards it)."""
    logger.warning("trial %d: %s", trial.number, reason)
    trial.set_user_attr(FAIL_REASON_ATTR, reason)
    if kind is not None:
        trial.set_user_attr(FAILURE_KIND_ATTR, kind)
