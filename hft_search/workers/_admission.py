"""Admission: exactly ``n_trials`` trials count, across any number of workers, without a lock.

Optuna's ``MaxTrialsCallback`` is racy across workers: two of them may both start "the last" trial. Here a trial
*holds a place* when it counts or may still count (RUNNING, WAITING; :func:`holds_place`), and places go by trial
number. When a trial starts (a new one or a re-queued WAITING one), before its objective does any work, the
worker counts the trials with a *lower number* that hold a place. When there are already ``n_trials`` of them,
this trial is *surplus*: it ends at once as FAIL with the user attribute ``surplus: true`` and never counts
(samplers ignore FAIL trials; reports can tell it from a real failure by that attribute).

Why that is exact: Optuna numbers trials under a lock on the study row, so all workers agree on the order and
every trial numbered below one is visible when that one starts. A trial that holds a place can only lose it
(interrupted: FAIL without a reason), never regain it, and trials created or re-queued later get higher numbers.
So once a trial is admitted, the places below it stay below ``n_trials``: the trials that count can never exceed
``n_trials``. They cannot stay below it either, because a worker only leaves when ``n_trials`` trials count (or
it is told to stop, or the timeout passes; :mod:`hft_search.workers._loop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna

from hft_search._optuna_compat import OPTIMIZE_LOGGER, failed_trial_number
from hft_search.attrs import BASELINE_ATTR, SURPLUS_ATTR
from hft_search.exceptions import TrialFailure
from hft_search.workers._counting import holds_place
from hft_search.workers._outage import storage_failure
from hft_search.workers._signals import AbortTrial

logger = logging.getLogger(__package__)  # one logger name for the whole worker loop, as before its split

Objective = Callable[[optuna.Trial], Any]
"""What a worker runs for each admitted trial (the CV objective, or a cheap one in tests and benchmarks)."""


class Surplus(Exception):
    """Ends a trial that started after ``n_trials`` places were taken (see the module docstring)."""


class Admission:
    """The objective as the workers run it: first the place check, then the real objective.

    Remembers the number of the trial it last started, so that the worker can hand that trial back when it
    is interrupted, and the surplus trials, whose FAIL Optuna should not report as a failure.
    """

    def __init__(self, objective: Objective, n_trials: int, abort: AbortTrial | None) -> None:
        self.objective = objective
        self.n_trials = n_trials
        self.abort = abort
        self.number: int | None = None
        self.surplus: set[int] = set()

    def __call__(self, trial: optuna.Trial) -> Any:
        self.number = trial.number
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        taken = sum(holds_place(t) for t in earlier)
        if taken >= self.n_trials and not trial.user_attrs.get(BASELINE_ATTR):
            self.surplus.add(trial.number)
            trial.set_user_attr(SURPLUS_ATTR, True)
            logger.info("trial %d is surplus: %d trials before it already hold the %d places; "
                        "it does not count", trial.number, taken, self.n_trials)
            raise Surplus(f"trial {trial.number} is surplus")
        if self.abort is None:
            return self.objective(trial)
        with self.abort.inside_objective():
            return self.objective(trial)


class _HideSurplusFailures(logging.Filter):
    """Drops Optuna's "Trial N failed" warnings about surplus trials: not failures (logged at INFO here).

    Also takes the traceback off Optuna's warning about a trial ended by Ctrl-C or a second stop signal: it
    shows where the process happened to be, which says nothing to a user; the one line stays. The same for a
    trial ended by a lost storage connection: the worker logs the outage itself, and a database that refuses
    clients (``max_connections``) would otherwise fill the log with one long traceback per attempt. And drops
    Optuna's two warnings (one with a traceback) about a trial whose objective already logged why it failed
    (a :class:`TrialFailure`), so a failing trial is one line; ``--verbose`` (debug logging) keeps them.
    """

    def __init__(self, admission: Admission) -> None:
        super().__init__()
        self.admission = admission
        self.explained: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (isinstance(record.exc_info[1], KeyboardInterrupt)
                                or storage_failure(record.exc_info[1]) is not None):
            record.exc_info, record.exc_text = None, None
        number = failed_trial_number(record.getMessage())
        if number is None:
            return True
        if record.exc_info and isinstance(record.exc_info[1], TrialFailure) \
                and not logging.getLogger("hft_search").isEnabledFor(logging.DEBUG):
            self.explained.add(number)
        return number not in self.admission.surplus and number not in self.explained


@contextmanager
def hiding_surplus_failures(admission: Admission) -> Iterator[None]:
    """Installs :class:`_HideSurplusFailures` on the logger of Optuna's optimize loop (if it is renamed, the
    warnings merely show)."""
    optimize_logger = logging.getLogger(OPTIMIZE_LOGGER)
    hide = _HideSurplusFailures(admission)
    optimize_logger.addFilter(hide)
    try:
        yield
    finally:
        optimize_logger.removeFilter(hide)
