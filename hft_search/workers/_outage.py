"""Storage outages: a worker waits for a database that went away (restart, fail-over, network) and goes on.

A worker retries the storage with growing pauses and goes on as soon as it answers; after
:data:`RECONNECT_WINDOW_S` seconds it gives up with a :class:`~hft_search.exceptions.StorageError`. The trial it
was running when the connection broke is handed back (:mod:`hft_search.workers._handback`): marked FAIL if it is
still RUNNING, and re-queued. A trial that another worker declared dead meanwhile (no heartbeat for the grace
period) was already re-queued by that worker; its result is dropped with a warning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState

from hft_search.exceptions import StorageError
from hft_search.storage import error_summary

logger = logging.getLogger(__package__)  # one logger name for the whole worker loop, as before its split

RECONNECT_WINDOW_S = 600.0
"""How long a worker keeps retrying a storage that does not answer before it gives up."""

STORAGE_ERRORS = (StorageInternalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
"""What a lost database connection raises (Optuna wraps most SQLAlchemy errors in StorageInternalError)."""


def storage_failure(error: BaseException | None) -> BaseException | None:
    """The storage error behind ``error``: itself, its cause, or one it was raised while handling.

    Optuna 5.0 reports a ``tell`` that fails in an outage as an ``UnboundLocalError`` raised while handling
    the storage error, so the whole chain is searched.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, STORAGE_ERRORS):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def wait_for_storage(study: optuna.Study, error: BaseException, *, may_go_on: Callable[[], bool],
                     sleep: Callable[[float], None], max_pause_s: float) -> None:
    """Retry the storage with a growing pause (at most ``max_pause_s``) until it answers, for
    :data:`RECONNECT_WINDOW_S` at most; return early when the worker may not go on (stopped, or past its
    timeout). ``sleep`` is the worker's, which ends at once on a stop request."""
    summary = error_summary(error)
    logger.warning("storage unavailable (%s); retrying for up to %.0f s", summary, RECONNECT_WINDOW_S)
    given_up = time.monotonic() + RECONNECT_WINDOW_S
    pause = 0.5
    while time.monotonic() < given_up:
        if not may_go_on():
            return  # stopping: the trial's heartbeat has stopped, another worker will retry it
        sleep(pause)
        try:
            study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except STORAGE_ERRORS:
            pause = min(2 * pause, max_pause_s)
            continue
        logger.info("storage reachable again; going on")
        return
    raise StorageError(f"the storage of study {study.study_name!r} did not answer for "
                       f"{RECONNECT_WINDOW_S:.0f} s: {summary}. Check the database, then start the "
                       "worker again: finished trials are kept.") from None
