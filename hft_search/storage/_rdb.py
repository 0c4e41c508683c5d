"""The RDBStorage subclass every SQL storage opens, and opening it without leaking a password.

Why a module of its own: SQLite and PostgreSQL both open their storage here, so the heartbeat behaviour (a
failed heartbeat is retried, a trial without one is still declared dead) and the race of workers creating
Optuna's tables together are written once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hft_search._optuna_compat import StaleSweepHookStorage, experimental, retry_callback, running_without_heartbeat
from hft_search.exceptions import StorageError
from hft_search.storage._errors import POSTGRES_INSTALL_HINT, error_summary, missing_module
from hft_search.urls import ACCEPTED_FORMS, mask_error, mask_url

logger = logging.getLogger(__name__)

SCHEMA_CREATION_ATTEMPTS = 5
"""Workers started together on an empty database all create Optuna's tables; all but one lose that race
(a table or the schema version already exists) and simply try again, when the tables are there."""


class _RDBStorage(StaleSweepHookStorage):
    """RDBStorage whose heartbeats cover every RUNNING trial, and outlive a short database outage.

    * Optuna records heartbeats from a thread that ends at the first failed write; the trial would then be
      declared dead after the grace period although its worker is alive and well, and run twice. Here a
      failed heartbeat is logged and the next one tried at the usual interval.
    * Optuna only declares dead a trial that has a heartbeat. A worker that dies between creating a trial
      and its first heartbeat (killed at that moment, or the database went away right then) would leave a
      RUNNING trial for ever, and the other workers waiting for its place with it. So the stale-trial sweep
      first starts the heartbeat clock of RUNNING trials that have none: if their worker is alive it beats
      within one interval, if not the trial is declared dead one grace period later, like any other. The
      clock is the database's, so workers whose clocks disagree still agree on that.
    """

    state_change_lock: Callable[[], AbstractContextManager[Any]] = nullcontext
    """Held around every change of a trial's state. PostgreSQL needs none (Optuna reads the row ``FOR
    UPDATE``); SQLite sets a file lock (:mod:`hft_search.storage._sqlite`)."""

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        with self.state_change_lock():
            return super().set_trial_state_values(trial_id, state, values)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (sqlalchemy.exc.SQLAlchemyError, StorageInternalError) as error:
            logger.warning("heartbeat of trial id %d not recorded (%s); trying again in %d s",
                           trial_id, error_summary(error), self.heartbeat_interval)

    def before_stale_sweep(self, study_id: int) -> None:
        for trial_id in running_without_heartbeat(self, study_id):
            super().record_heartbeat(trial_id)


def parse_url(url: str) -> sqlalchemy.URL:
    """SQLAlchemy's reading of ``url``, or a :class:`StorageError` that shows no password and the accepted forms."""
    try:
        return sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise StorageError(f"malformed URL {mask_url(url)!r} ({error}): use {ACCEPTED_FORMS}.") from None


def heartbeat_kwargs(heartbeat_interval: int, grace_period: int | None, max_retries: int) -> dict[str, Any]:
    """RDBStorage arguments for heartbeats and the retry of trials whose worker died
    (:func:`hft_search._optuna_compat.retry_callback`)."""
    return {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "heartbeat_stale_trial_callback": retry_callback(max_retries),
    }


def _lost_schema_race(error: BaseException) -> bool:
    """Whether creating Optuna's tables failed because another worker was creating them at the same time."""
    return isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error)


def rdb_storage(
    url: str, engine_kwargs: dict[str, Any], heartbeat: dict[str, Any], *, hint: str
) -> RDBStorage:
    """RDBStorage, with connection failures turned into a :class:`StorageError` that shows no password.

    The SQLAlchemy error is summarised in the message and not chained: its traceback is not wanted by a user,
    and a chained exception is one more place a credential could leak from.
    """
    attempt = 1
    while True:
        try:
            return _open_rdb_storage(url, engine_kwargs, heartbeat)
        except (sqlalchemy.exc.SQLAlchemyError, StorageInternalError) as error:
            if attempt == SCHEMA_CREATION_ATTEMPTS or not _lost_schema_race(error):
                raise StorageError(f"cannot open {mask_url(url)!r}: {mask_error(error_summary(error), url)}\n"
                                   f"{mask_error(hint, url)}") from None
        attempt += 1
        time.sleep(random.uniform(0.1, 0.5))


def _open_rdb_storage(url: str, engine_kwargs: dict[str, Any], heartbeat: dict[str, Any]) -> RDBStorage:
    try:
        return experimental(lambda: _RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat))
    except ImportError as error:
        driver = missing_module(error)
        raise StorageError(
            f"cannot open {mask_url(url)!r}: the database driver {driver!r} is not installed. "
            f"Install it with: {POSTGRES_INSTALL_HINT}"
        ) from None
