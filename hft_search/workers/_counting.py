"""Which trials count towards ``n_trials``, and what a study that stopped short or has no result tells its user.

A *searched* trial counts once it ended with a verdict: COMPLETE, PRUNED, or FAIL with a recorded
``fail_reason`` (out of memory, an exception in a fold). A FAIL trial without a reason was interrupted (Ctrl-C, a
killed worker, a lost database connection) and does not count, so re-running the same command, or starting more
workers, continues to ``n_trials`` in total instead of starting over or stopping short. The trials of the baseline
sweep (:mod:`hft_search.baseline`) never count and never hold a place: ``n_trials`` is the search's budget, and a
spec with ``n_trials: 1`` runs the sweep and one trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from hft_search.attrs import FAIL_REASON_ATTR
from hft_search.baseline import is_baseline


def has_verdict(trial: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL with a recorded ``fail_reason``: a trial that was not interrupted."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and FAIL_REASON_ATTR in trial.user_attrs


def counts(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts towards ``n_trials``: a searched trial with a verdict."""
    return has_verdict(trial) and not is_baseline(trial)


def holds_place(trial: FrozenTrial) -> bool:
    """Whether a trial counts or may still count: it takes one of the ``n_trials`` places."""
    return (trial.state in (TrialState.RUNNING, TrialState.WAITING) and not is_baseline(trial)) or counts(trial)


def counted_trials(study: optuna.Study) -> int:
    """How many of the study's trials count towards ``n_trials``, whichever worker ran them."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def baseline_runs(study: optuna.Study) -> int:
    """Trials of the baseline sweep that ended with a verdict (outside ``n_trials``)."""
    return sum(is_baseline(t) and has_verdict(t) for t in study.get_trials(deepcopy=False))


@dataclass(frozen=True)
class Census:
    """What a worker needs to know about a study before it starts a trial (one read of the trials for all three
    numbers, because a worker takes it before every trial)."""

    counted: int
    running: int
    waiting_baseline: int

    @classmethod
    def of(cls, study: optuna.Study) -> Census:
        trials = study.get_trials(deepcopy=False)
        return cls(counted=sum(counts(t) for t in trials),
                   running=sum(t.state == TrialState.RUNNING and not is_baseline(t) for t in trials),
                   waiting_baseline=sum(t.state == TrialState.WAITING and is_baseline(t) for t in trials))

    def next_step(self, n_trials: int) -> bool | None:
        """True: start a trial; False: the study is done; None: all free places are held by running trials.

        A WAITING trial of the baseline sweep always runs: it takes no place. A searched WAITING trial (enqueued
        by the user, the portfolio or a warm start, or re-queued for a dead worker) is what the next trial
        started takes (Optuna pops WAITING trials first), so it runs while a place is free and otherwise stays
        queued for a later run with a larger ``n_trials``, as ``study.optimize(n_trials=1)`` leaves the
        enqueued trials it did not reach.
        """
        if self.waiting_baseline:
            return True
        if self.counted >= n_trials:
            return False
        return True if self.counted + self.running < n_trials else None


def shortfall(study: optuna.Study, n_trials: int) -> str | None:
    """Why a study ended below ``n_trials`` counted trials, with what to do; None when it reached them."""
    trials = study.get_trials(deepcopy=False)
    counted = sum(counts(t) for t in trials)
    if counted >= n_trials:
        return None
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    held = (f"; trials {', '.join(map(str, running))} are RUNNING in other workers, or in workers that died: "
            f"if none runs them, `hft-search requeue --study {study.study_name} --storage URL` re-queues them"
            if running else "")
    return (f"study {study.study_name!r} stopped at {counted} of {n_trials} counted trials{held}; "
            "run the same command again to continue")


def no_result(study: optuna.Study) -> str | None:
    """Why a study that ran has nothing to show: no COMPLETE trial and at least one FAIL (every trial failed, or
    failed and was pruned), with the first reason; None when it has a result or nothing failed."""
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not failed or any(t.state == TrialState.COMPLETE for t in trials):
        return None
    first = failed[0]
    return (f"study {study.study_name!r} has no completed trial: {len(failed)} of {len(trials)} failed (trial "
            f"{first.number}: {first.user_attrs.get(FAIL_REASON_ATTR, 'no reason recorded')}); fix the cause (run "
            "with --verbose for the traceback) and run again")
