"""Every reach of hft_search into Optuna's private names and undocumented behaviour, in one place.

Optuna's public API does not cover a few things this project needs (the storage of a study, the rows of the
heartbeat table, the sweep for stale trials, the loggers whose messages it filters). Each of those reaches is
here, with why, so that a new Optuna release is checked in one module: ``pyproject.toml`` pins ``optuna<6``
for them, and ``tests/test_optuna_compat.py`` fails loudly when an installed Optuna moved one of them.

The APIs Optuna marks "experimental" that this project relies on on purpose are called through
:func:`experimental`, which silences the warning saying so: they are public, but their warning would show on
every worker start.
"""

from __future__ import annotations

import abc
import re
import warnings
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages import _CachedStorage as CachedStorage  # private: benchmarks meter its calls
from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel  # private: the tables
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "IN_MEMORY_STORAGE_LOGGER",
    "OPTIMIZE_LOGGER",
    "RDB_STORAGE_LOGGER",
    "STALE_TRIAL_IDS_METHOD",
    "CachedStorage",
    "StaleSweepHookStorage",
    "TrialHeartbeatModel",
    "TrialModel",
    "experimental",
    "failed_trial_number",
    "heartbeat_interval",
    "retry_callback",
    "retry_history",
    "running_without_heartbeat",
    "study_storage",
]

T = TypeVar("T")

OPTIMIZE_LOGGER = "optuna.study._optimize"
"""The logger of Optuna's optimize loop, which warns "Trial N failed ..." (with a traceback) for every FAIL
trial. The worker loop filters it: a surplus trial is no failure, and a trial whose objective already logged
why it failed needs no second, longer message. Private module name: if it moves, those warnings merely show."""

IN_MEMORY_STORAGE_LOGGER = "optuna.storages._in_memory"
"""The logger that says "A new study created in memory with name: NAME". Reports build in-memory display copies
of a study and filter that line out. Private module name: if it moves, the line merely shows."""

RDB_STORAGE_LOGGER = "optuna.storages._rdb.storage"
"""The logger of Optuna's RDB storage, whose messages (heartbeat and connection errors) may quote the storage URL;
:func:`hft_search.storage.install_log_masking` covers it through its parent ``optuna``."""

STALE_TRIAL_IDS_METHOD = "_get_stale_trial_ids"
"""The storage method that :func:`optuna.storages.fail_stale_trials` asks for the trials whose heartbeat is
older than the grace period; :class:`StaleSweepHookStorage` overrides it (benchmarks meter it by this name)."""

_TRIAL_FAILED = re.compile(r"Trial (\d+) failed")
"""The start of Optuna's warning for a FAIL trial (``optuna.study._optimize``): the only place that names the
trial of that warning, since the log record carries no trial number."""


def experimental(factory: Callable[[], T]) -> T:
    """Call an Optuna API marked experimental that this project relies on on purpose, without its warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return factory()


def failed_trial_number(message: str) -> int | None:
    """The trial number of Optuna's "Trial N failed" warning, or None for any other message."""
    match = _TRIAL_FAILED.match(message)
    return int(match[1]) if match else None


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage behind ``study``: ``Study`` has no public accessor for it in Optuna 5 (``study._storage``;
    for an RDB storage, Optuna's caching wrapper around it)."""
    return study._storage


def heartbeat_interval(study: optuna.Study) -> int | None:
    """The heartbeat interval of ``study``'s storage; None for storages without heartbeats (journal, in memory).

    ``get_heartbeat_interval`` is public on :class:`~optuna.storages.BaseStorage` subclasses with heartbeats
    (``BaseHeartbeat``), but reaching the storage of a study is not.
    """
    interval = getattr(study_storage(study), "get_heartbeat_interval", None)
    return interval() if interval is not None else None


def retry_callback(max_retries: int) -> RetryHeartbeatStaleTrialCallback:
    """Optuna's callback that re-queues a stale (or handed back) trial's parameters as a WAITING trial, at most
    ``max_retries`` times; the one builder of it (storages, the worker loop and ``hft-search requeue``).

    ``RetryHeartbeatStaleTrialCallback`` is Optuna's current name (``RetryFailedTrialCallback`` and the
    ``failed_trial_callback`` argument are deprecated since 4.9 and go in 6.0); it is "experimental".
    """
    return experimental(lambda: RetryHeartbeatStaleTrialCallback(max_retry=max_retries))


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the trials that ``trial`` is a retry of, oldest first (empty for a trial of its own)."""
    return experimental(lambda: RetryHeartbeatStaleTrialCallback.retry_history(trial))


class StaleSweepHookStorage(RDBStorage):
    """RDBStorage that calls :meth:`before_stale_sweep` each time Optuna looks for stale trials.

    Optuna has no public hook there: :func:`optuna.storages.fail_stale_trials` (run when a trial starts, and by
    the waiting worker loop) calls the private ``_get_stale_trial_ids`` of the storage, which is overridden here.
    """

    @abc.abstractmethod
    def before_stale_sweep(self, study_id: int) -> None:
        """What the subclass does before the stale trials of study ``study_id`` are looked for."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        self.before_stale_sweep(study_id)
        return super()._get_stale_trial_ids(study_id)


def running_without_heartbeat(storage: RDBStorage, study_id: int) -> list[int]:
    """Ids of the RUNNING trials of study ``study_id`` that have no heartbeat row yet.

    Optuna's tables (``optuna.storages._rdb.models``) are private; the query reads the trial and heartbeat
    tables directly because no public call tells a trial that never beat from one that did.
    """
    query = sqlalchemy.select(TrialModel.trial_id).where(
        TrialModel.study_id == study_id,
        TrialModel.state == TrialState.RUNNING,
        ~sqlalchemy.exists().where(TrialHeartbeatModel.trial_id == TrialModel.trial_id),
    )
    with storage.engine.connect() as connection:
        return list(connection.execute(query).scalars())
