"""Pruning that compares like with like: where a trial reports, and the rules every pruner of a study obeys.

Where a trial reports (:class:`ReportSchedule`)
    With a multi-fidelity pruner (``successive_halving``, ``hyperband``) a trial reports after every epoch of
    every fold, at step ``fold * max_epochs + epoch`` (1-based epochs, ``max_epochs`` the spec's most), the
    running CV estimate there: the mean of the finished folds' scores and the current fold's best score so far.
    The steps are **dense**: a fold that stops early (early stopping), or that trains fewer epochs than
    ``max_epochs`` (``training.epochs`` searched), carries its best score forward through the epochs it did
    not train, so every trial reports at every step and two trials are always judged at the same fold-epoch.
    A fold that ended has its final score: what the trial knows at that point of the schedule. With
    ``wilcoxon`` and ``median`` a trial reports each fold's score at step ``fold``.

The rules (:class:`GuardedPruner`, around Optuna's own pruner)
    * **Never in the final fold.** A trial that has started its last fold has paid nearly all of its cost: it
      completes, so its verdict keeps every fold's score and the sampler sees a complete trial, not one
      ranked below every complete trial for having been cut at the end. Successive halving's rungs
      (1, 3, 9, ... fold-epochs) that fall in the final fold are therefore never evaluated, and Hyperband's
      brackets are sized to the steps before it.
    * **Never a baseline trial** (user attribute ``baseline``, :mod:`hft_search.baseline`): the reference every
      lift is measured against must complete, however it compares. It still competes: the wrapped pruner sees
      its reports, so successive halving records its rung values and other trials are judged against it.
    * **Not before a rung has enough trials.** A trial is pruned at a step only once at least ``min_trials``
      trials (itself included) have reported there. Why :data:`MIN_TRIALS_PER_RUNG` = 6: with fewer than
      twice the reduction factor (3), Optuna's asynchronous successive halving promotes only the single best
      value so far, so the first trials would have to beat every earlier trial at that fold-epoch (the tuned
      full fine-tunes of the baseline included) instead of reaching the top third; slow starters (LoRA, frozen
      bottoms) would die at their first epoch. From 6 on, the top third holds at least two trials. A trial
      spared for this reason is logged.

How many trials were cut late is measured, not assumed: :func:`late_prunes` counts the PRUNED trials that had
spent at least 80 % of their cost (``benchmarks/search_quality.py`` reports it; the target is 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from hft_search._optuna_compat import experimental
from hft_search.baseline import BASELINE_ATTR
from hft_search.spec import StudySpec

logger = logging.getLogger(__name__)

MULTI_FIDELITY = ("successive_halving", "hyperband")
"""Pruners that decide after every fold-epoch (the others decide between folds)."""
REDUCTION_FACTOR = 3
"""Successive halving and Hyperband keep the best third of the trials at each rung."""
MIN_TRIALS_PER_RUNG = 2 * REDUCTION_FACTOR
"""Trials (the judged one included) that must have reported at a step before any trial is pruned there."""
LATE_SHARE = 0.8
"""A PRUNED trial that had spent this share of its cost or more counts as pruned late (:func:`late_prunes`)."""


@dataclass(frozen=True)
class ReportSchedule:
    """The steps at which a trial reports (see the module docstring).

    ``max_epochs`` set: fold-epoch steps ``1 .. folds * max_epochs``; None: one step per fold, ``0 .. folds - 1``.
    """

    folds: int
    max_epochs: int | None = None

    @classmethod
    def for_spec(cls, spec: StudySpec) -> ReportSchedule:
        """Where the spec's trials report: after every fold-epoch with a multi-fidelity pruner, else after
        every fold."""
        return cls(spec.cv.folds, spec.max_epochs() if spec.study.pruner in MULTI_FIDELITY else None)

    @property
    def per_epoch(self) -> bool:
        return self.max_epochs is not None

    def step(self, fold: int, epoch: int | None = None) -> int:
        """The step of ``fold`` (0-based) after ``epoch`` (1-based; None on a per-fold schedule)."""
        if self.max_epochs is None:
            return fold
        if epoch is None or not 1 <= epoch <= self.max_epochs:
            raise ValueError(f"epoch must be in 1..{self.max_epochs} on a fold-epoch schedule, got {epoch}")
        return fold * self.max_epochs + epoch

    def fold_of(self, step: int) -> int:
        return step if self.max_epochs is None else (step - 1) // self.max_epochs

    @property
    def last_prunable_step(self) -> int:
        """The last step before the final fold (on a per-fold schedule, the step of the second-to-last fold)."""
        return self.folds - 2 if self.max_epochs is None else (self.folds - 1) * self.max_epochs

    def prunable(self, step: int) -> bool:
        return self.fold_of(step) < self.folds - 1


class GuardedPruner(optuna.pruners.BasePruner):
    """Optuna's ``pruner`` under the rules of the module docstring: no pruning in the final fold, never a
    baseline trial, and none at a step fewer than ``min_trials`` trials have reached.

    The wrapped pruner is asked at every step before the final fold, for every trial (baseline included), so
    that a pruner with state in the storage (successive halving's rung values) sees each trial's report at the
    very step it was made; its verdict is then overruled where a rule says so.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, schedule: ReportSchedule, *,
                 min_trials: int = MIN_TRIALS_PER_RUNG) -> None:
        if min_trials < 1:
            raise ValueError(f"min_trials must be >= 1, got {min_trials}")
        self.pruner = pruner
        self.schedule = schedule
        self.min_trials = min_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or not self.schedule.prunable(step):
            return False
        if not self.pruner.prune(study, trial):
            return False
        if trial.user_attrs.get(BASELINE_ATTR):
            logger.info("trial %d is a baseline trial: not pruned at step %d, although %s would", trial.number,
                        step, type(self.pruner).__name__)
            return False
        reached = sum(step in other.intermediate_values for other in study.get_trials(deepcopy=False)
                      if other.number != trial.number) + 1
        if reached < self.min_trials:
            logger.info("trial %d: not pruned at step %d, although %s would: only %d trial(s) have reached it, "
                        "pruning starts once %d have", trial.number, step, type(self.pruner).__name__, reached,
                        self.min_trials)
            return False
        return True


def guarded_pruner(name: str, schedule: ReportSchedule) -> optuna.pruners.BasePruner:
    """The pruner called ``name`` in a spec, under :class:`GuardedPruner`'s rules (``none``: Optuna's
    ``NopPruner``, which needs no guard)."""
    if name == "successive_halving":
        inner: optuna.pruners.BasePruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=REDUCTION_FACTOR, min_early_stopping_rate=0)
    elif name == "hyperband":  # brackets over the steps that may prune: none starts in the final fold
        inner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, schedule.last_prunable_step),
                                               reduction_factor=REDUCTION_FACTOR)
    elif name == "wilcoxon":  # the spec guarantees it enough folds (spec.PRUNER_MIN_FOLDS)
        inner = experimental(lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2))
    elif name == "median":
        inner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    else:
        return optuna.pruners.NopPruner()
    return GuardedPruner(inner, schedule)


def cost_share(trial: FrozenTrial, folds: int) -> float | None:
    """The share of its full cost (``folds`` × its ``training.epochs`` fold-epochs) a trial trained, from its
    ``fold_epochs`` and ``config`` attributes; None when it recorded neither."""
    spent = trial.user_attrs.get("fold_epochs")
    epochs = (trial.user_attrs.get("config") or {}).get("training.epochs")
    if spent is None or not epochs:
        return None
    return spent / (folds * epochs)


def late_prunes(study: optuna.Study, folds: int, share: float = LATE_SHARE) -> list[int]:
    """Numbers of the PRUNED trials (by the pruner or a non-finite loss: either way their cost bought no
    verdict) that had trained at least ``share`` of their full cost; ``folds`` is the study's folds per trial."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
            if (spent := cost_share(t, folds)) is not None and spent >= share]
