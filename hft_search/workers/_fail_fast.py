"""Failing fast: a worker stops after ``max_consecutive_failures`` of its trials in a row failed from an exception.

Such a trial (``failure_kind: "exception"``, recorded by the objective) most likely hit a bug or a broken setup
that the next trial hits too, so the worker stops with :class:`~hft_search.exceptions.ConsecutiveFailures` (exit
status 1) instead of spending the budget on it. The streak is each worker's, over its own trials. Out-of-memory
trials (``failure_kind: "oom"``) are a property of the configuration's size, not a bug: they neither count
towards the streak nor end it; a COMPLETE or PRUNED trial ends it.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

from hft_search.attrs import FAIL_REASON_ATTR, FAILURE_KIND_ATTR
from hft_search.exceptions import ConsecutiveFailures


class FailureStreak:
    """One worker's trials that failed from an exception in a row, with their reasons for the final message."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reasons: list[str] = []

    def add(self, trial: FrozenTrial) -> None:
        """Take a finished trial of this worker into the streak; raise :class:`ConsecutiveFailures` when the
        streak reaches :attr:`limit`."""
        if trial.state == TrialState.FAIL and trial.user_attrs.get(FAILURE_KIND_ATTR) == "exception":
            self.reasons.append(f"trial {trial.number}: {trial.user_attrs.get(FAIL_REASON_ATTR, '?')}")
        elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.reasons = []
        if len(self.reasons) >= self.limit:
            reasons = "\n  ".join(self.reasons)
            raise ConsecutiveFailures(
                f"{len(self.reasons)} trials in a row failed from an exception, so this worker stopped "
                f"(study.max_consecutive_failures={self.limit}):\n  {reasons}\n"
                "This looks like a bug or a broken setup rather than bad luck: fix it (run with --verbose for the "
                "traceback), then start the worker again; finished trials are kept.")
