"""Storage URLs → Optuna storages, with the settings that keep several workers safe.

A study lives in one of three places, named by a URL:

* ``sqlite:///PATH`` (the default, nothing to start): an SQLite file in WAL mode with a long busy timeout,
  so a few local worker processes queue for the write lock instead of losing a trial to "database is locked".
* ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``: for workers on several machines. Connections are
  checked before use (``pool_pre_ping``), the pool stays small (a worker runs one trial at a time), and
  connections are recycled before firewalls drop them. The same URL may name a PgBouncer in transaction
  pooling in front of the server, for hundreds of workers (see :func:`pgbouncer_safe_connect_args`).
* ``journal:PATH``: Optuna's append-only journal file, for shared file systems without a database server.

Both RDB storages record a heartbeat of every running trial. When a worker dies (killed, preempted, out of
host memory), its trial stops beating; after ``grace_period`` seconds the next worker to start a trial marks
it ``FAIL`` and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` re-queues its parameters as a
``WAITING`` trial, at most ``max_retries`` times. Optuna 5.0's
:class:`~optuna.storages.journal.JournalStorage` has no heartbeat (optuna#6615), so a journal study keeps the
trial of a dead worker ``RUNNING``.

URLs carry passwords, so everything this package reports goes through :func:`mask_url`, and
:func:`install_log_masking` makes the ``hft_search`` and ``optuna`` logs do the same.

One concept per private module: :mod:`._factory` (URL → storage, dispatching on its kind), :mod:`._sqlite`,
:mod:`._postgres` and :mod:`._journal` (one backend each), :mod:`._rdb` (the RDBStorage subclass and opening
it), :mod:`._errors` (what a failure says), :mod:`._log_masking`; the text rules of URLs, masking included,
are :mod:`hft_search.urls`. The public names are re-exported here.
"""

from __future__ import annotations

from hft_search.storage._errors import POSTGRES_INSTALL_HINT, error_summary, storage_failure
from hft_search.storage._factory import (
    DEFAULT_STORAGE_URL,
    STORAGE_ENV_VAR,
    check_url,
    delete_study_if_exists,
    load_named_study,
    make_storage,
    resolve_storage_url,
    storage_files,
)
from hft_search.storage._log_masking import MaskingFilter, install_log_masking, remove_log_masking
from hft_search.storage._postgres import (
    POSTGRES_CONNECT_TIMEOUT_S,
    POSTGRES_POOL,
    check_schema_version,
    pgbouncer_safe_connect_args,
)
from hft_search.storage._rdb import SCHEMA_CREATION_ATTEMPTS
from hft_search.storage._sqlite import SQLITE_BUSY_TIMEOUT_S, SQLITE_SIDE_FILES, SQLITE_WAL_SYNCHRONOUS
from hft_search.urls import mask_error, mask_url

__all__ = [
    "DEFAULT_STORAGE_URL",
    "POSTGRES_CONNECT_TIMEOUT_S",
    "POSTGRES_INSTALL_HINT",
    "POSTGRES_POOL",
    "SCHEMA_CREATION_ATTEMPTS",
    "SQLITE_BUSY_TIMEOUT_S",
    "SQLITE_SIDE_FILES",
    "SQLITE_WAL_SYNCHRONOUS",
    "STORAGE_ENV_VAR",
    "MaskingFilter",
    "check_schema_version",
    "check_url",
    "delete_study_if_exists",
    "error_summary",
    "install_log_masking",
    "load_named_study",
    "make_storage",
    "mask_error",
    "mask_url",
    "pgbouncer_safe_connect_args",
    "remove_log_masking",
    "resolve_storage_url",
    "storage_failure",
    "storage_files",
]
