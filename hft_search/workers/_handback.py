"""Handing a trial back: a trial that its worker could not finish is marked FAIL and its parameters re-queued
as a WAITING trial, so that another worker (or the next start) runs it again and the study reaches ``n_trials``.

Three ways lead here: a worker interrupted during its trial (a second stop signal, :class:`AbortTrial`), a worker
whose storage went away during its trial (:mod:`hft_search.workers._outage`), and ``hft-search requeue`` for the
trials of workers that died on a storage without heartbeats (:func:`requeue_running`). A worker that dies
outright is covered by Optuna's heartbeat sweep, which re-queues through the same retry callback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hft_search._optuna_compat import retry_callback, retry_history
from hft_search.storage import mask_url
from hft_search.workers._counting import has_verdict

logger = logging.getLogger(__package__)  # one logger name for the whole worker loop, as before its split

Requeue = Callable[[optuna.Study, FrozenTrial], None]
"""Optuna's retry callback: re-queues a FAIL trial's parameters as a WAITING trial, at most ``max_retries``
times per original trial."""


def trial_of(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` as the storage holds it now (trial numbers are positions in the study's list)."""
    return study.get_trials(deepcopy=False)[number]


def requeued(study: optuna.Study, number: int) -> bool:
    """Whether a WAITING copy of trial ``number`` was already made (by a heartbeat sweep or a hand-back)."""
    return any(number in retry_history(t) for t in study.get_trials(deepcopy=False))


def taken_over(study: optuna.Study, number: int) -> bool:
    """Whether another worker declared trial ``number`` dead (FAIL) and re-queued it: its result here is void."""
    return trial_of(study, number).state == TrialState.FAIL and requeued(study, number)


def hand_back(study: optuna.Study, number: int, *, surplus: bool, requeue: Requeue) -> None:
    """The trial this worker could not finish: mark it FAIL if still RUNNING, and re-queue it once.

    A trial that another worker's heartbeat sweep failed is re-queued by that worker (skipped here).
    Should both re-queue it in the millisecond between that sweep's two writes, the parameters run twice;
    the count stays exact (the later copy is surplus or takes a free place). A surplus trial never held a
    place and is not re-queued.
    """
    trial = trial_of(study, number)
    if trial.state == TrialState.RUNNING:
        try:
            study.tell(number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):
            return  # ended meanwhile by another worker's heartbeat sweep, which re-queues it
        trial = trial_of(study, number)
    if trial.state == TrialState.FAIL and not has_verdict(trial) and not surplus and not requeued(study, number):
        requeue(study, trial)
        logger.info("trial %d re-queued with the same parameters", number)


def try_hand_back(study: optuna.Study, number: int, *, surplus: bool, requeue: Requeue) -> None:
    """Hand the trial back if the storage answers; if it does not, the trial's heartbeat has stopped, and
    another worker retries it after the grace period."""
    try:
        hand_back(study, number, surplus=surplus, requeue=requeue)
    except Exception as error:  # an interrupt or the first storage error is what the user must see
        logger.warning("could not re-queue trial %s (%s); it is retried once its heartbeat is stale",
                       number, mask_url(str(error)))


def requeue_running(study: optuna.Study, *, older_than_s: float = 0.0, max_retries: int = 3) -> list[int]:
    """Mark the study's RUNNING trials that started more than ``older_than_s`` seconds ago FAIL, and re-queue
    their parameters as WAITING trials; return their numbers (``hft-search requeue``).

    The way out for storages without heartbeats (journal): there a worker that was killed leaves its trial
    RUNNING for ever, holding one of the ``n_trials`` places. Only the user knows that no worker runs it any
    more; a live worker whose trial is re-queued finds it FAIL at its end and drops its result.
    """
    now = time.time()
    requeue = retry_callback(max_retries)
    done = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - started < older_than_s:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):
            continue  # it finished meanwhile
        requeue(study, trial_of(study, trial.number))
        done.append(trial.number)
    return done
