"""The Optuna adapter of the cross-validator: one trial = one sampled hybrid configuration scored on k folds.

Flow of a trial (:meth:`CVObjective.__call__`):

1. :func:`suggest_config` samples the spec's search space. Group switches (``lora.enabled`` ...) are sampled
   first and a group's knobs only when it is on, so the sampler never sees inactive knobs.
2. :class:`~hft_search.cv.CrossValidator` fits the configuration fold by fold (same folds and seeds in every
   trial: common random numbers, so two trials differ by their configuration, not by their luck).
3. The trial reports as the pruner needs (:mod:`hft_search.pruning`): with a multi-fidelity pruner
   (``successive_halving``, the default, and ``hyperband``) the running CV estimate after every epoch, at dense
   fold-epoch steps (a fold that ended early carries its score forward), so a hopeless configuration stops
   after one epoch; with ``wilcoxon`` and ``median`` each fold's score, at step ``fold``. No trial is pruned
   in its final fold, and a baseline trial never.
   The value is the mean fold score; provenance goes into the trial's user attributes
   (see ``docs/user_attrs.md``), the torch thread count included (``verify`` re-runs with it).
4. A configuration the study already completed is not fine-tuned again (:func:`repeated_trial`): the trial
   reuses that verdict and says ``repeat_of``. PRUNED and FAIL configurations are fitted again.

The trials of the baseline sweep (:mod:`hft_search.baseline`, enqueued first) run the plain full fine-tune at
their learning rate instead of a sampled configuration; lifts over the best of them are computed when read.

Failures, and why they end as they do:

* a NaN or infinite loss ends the trial **PRUNED**: it is a property of the configuration (say, a learning
  rate far too high), so the sampler should see the trial as bad and steer away from that region;
* out-of-memory (``torch.OutOfMemoryError``, or :class:`~hft_search.exceptions.DeviceMemoryError` when the
  configuration was refused before training for not fitting the device) or any other exception in a fold ends
  it **FAIL**: a property of the machine or a bug, which should not bias the sampler. Out-of-memory is recorded
  as ``failure_kind: "oom"``, which the worker's fail-fast rule does not count (a configuration too large for
  the device says nothing about the next one); any other exception as ``"exception"``. In all cases
  ``fail_reason`` is recorded and the study goes on.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from hft_search.attrs import (
    BASELINE_ATTR,
    FAIL_REASON_ATTR,
    FAILURE_KIND_ATTR,
    FOLD_EPOCHS_ATTR,
    REPEAT_OF_ATTR,
    TORCH_THREADS_ATTR,
    TRIAL_SCORE_ATTRS,
)
from hft_search.baseline import baseline_config, baseline_params
from hft_search.caching import Cache
from hft_search.cv import CrossValidator, FoldResult, package_versions, release_memory, teacher_setting
from hft_search.data import LabelledData
from hft_search.exceptions import DeviceMemoryError, TrainingDiverged, TrialFailure
from hft_search.models import BaseModel
from hft_search.pruning import ReportSchedule
from hft_search.spec import SWITCHABLE_GROUPS, CategoricalDist, FloatDist, HybridConfig, IntDist, StudySpec
from hft_search.training import EpochCallback

logger = logging.getLogger(__name__)



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


def trial_config(trial: optuna.Trial, spec: StudySpec) -> HybridConfig:
    """The configuration a trial runs: for a trial of the baseline sweep the plain full fine-tune at its
    enqueued training knobs (every knob it carries is suggested, so that the sampler sees the trial's full
    shape; see :mod:`hft_search.baseline`), else a sampled one."""
    if not trial.user_attrs.get(BASELINE_ATTR):
        return suggest_config(trial, spec)
    params = {name: suggest_value(trial, name, spec.search_space[name]) for name in baseline_params(spec)[0]}
    return baseline_config(spec, params)


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


REASON_CHARS = 2000
"""Longest ``fail_reason``; longer ones keep their start and their end (where Python puts the cause)."""


def error_text(error: BaseException) -> str:
    """An exception's whole message and those of its causes on one line, for ``fail_reason``.

    Not only the first line: many library errors say what went wrong last (``... size mismatch for
    position_ids``), so a message is shortened only beyond :data:`REASON_CHARS`, in the middle.
    """
    parts = [" ".join(str(error).split())]
    cause = error.__cause__
    while cause is not None and len(parts) < 5:
        parts.append(f"caused by {type(cause).__name__}: {' '.join(str(cause).split())}")
        cause = cause.__cause__
    text = "; ".join(parts)
    if len(text) <= REASON_CHARS:
        return text
    half = REASON_CHARS // 2
    return f"{text[:half]} ... {text[-half:]}"


VERDICT_ATTRS = TRIAL_SCORE_ATTRS
"""The attributes of a COMPLETE trial that a repeat of its configuration copies: what the configuration scored
and how (``docs/user_attrs.md``), everything ``status``, reports, ``export`` and ``verify`` read from a complete
trial. Not the marks of how the earlier trial came about or ended (``baseline``, ``enqueued``, ``surplus``,
``fail_reason``, ``failure_kind``, ``repeat_of``) nor its cost (``fold_epochs``: a repeat trains nothing)."""


def repeated_trial(trial: optuna.Trial, pooling: str) -> optuna.trial.FrozenTrial | None:
    """The first COMPLETE trial of the study with ``trial``'s parameters whose head read ``pooling``, or None.

    Folds and seeds are the study's, so a configuration fine-tuned again would only give the same score at the
    price of k fine-tunes. Only a COMPLETE verdict is reused: a PRUNED one depended on the trials it was
    compared with at that moment (the pruner judges against the trials that had reached the same step), and a
    FAIL on the machine (out of memory, a lost device) or on a bug since fixed, so those configurations are
    fitted again. So is a trial scored with another pooling, or before pooling was recorded: ``model.pooling`` is
    not a searched parameter, and a study resumed after the packaged MiniLM's default moved from ``cls`` to
    ``mean`` would otherwise reuse verdicts its classifier head no longer reproduces.
    """
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (other.number != trial.number and other.params == trial.params
                and other.user_attrs.get("pooling") == pooling):
            return other
    return None


def repeat_verdict(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> float | tuple[float, ...]:
    """End ``trial`` with the values of ``earlier`` (a COMPLETE trial of the same configuration), without
    fine-tuning.

    The sampler learns that this point is known (Optuna's advice for repeated samples); the trial records
    ``repeat_of``, ``fold_epochs`` 0, and :data:`VERDICT_ATTRS` of the earlier trial, so reports and ``export``
    see a complete trial.
    """
    logger.info("trial %d repeats the configuration of trial %d: its verdict is reused, nothing is fine-tuned "
                "(set study.allow_repeats to fine-tune repeats)", trial.number, earlier.number)
    for key in sorted(VERDICT_ATTRS & earlier.user_attrs.keys()):
        trial.set_user_attr(key, earlier.user_attrs[key])
    trial.set_user_attr(REPEAT_OF_ATTR, earlier.number)
    trial.set_user_attr(FOLD_EPOCHS_ATTR, 0)
    return tuple(earlier.values) if len(earlier.values) > 1 else earlier.values[0]


def _fail(trial: optuna.Trial, reason: str, kind: str | None = None) -> None:
    """Record why a trial stops; ``kind`` ("oom" or "exception") for a FAIL trial, read by the worker loop's
    fail-fast rule (``study.max_consecutive_failures``: out-of-memory does not count towards it)."""
    logger.warning("trial %d: %s", trial.number, reason)
    trial.set_user_attr(FAIL_REASON_ATTR, reason)
    if kind is not None:
        trial.set_user_attr(FAILURE_KIND_ATTR, kind)
