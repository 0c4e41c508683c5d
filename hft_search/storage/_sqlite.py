"""SQLite storages: a file in WAL mode with a long busy timeout, so a few local workers queue for the write lock.

Why a module of its own: what makes SQLite safe for several processes (WAL, the busy timeout, the integrity
check of an existing file) is SQLite's alone, and so are the side files that belong to a database.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import sqlalchemy
from optuna.storages import RDBStorage

from hft_search.exceptions import StorageError
from hft_search.storage._errors import no_storage
from hft_search.storage._rdb import parse_url, rdb_storage

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 60
"""How long an SQLite writer waits for the lock; a trial's writes are tiny, so a minute means a stuck peer."""

SQLITE_WAL_SYNCHRONOUS = "NORMAL"
"""SQLite's advice for WAL: commits are not flushed to disk one by one. A worker that crashes loses nothing;
a power cut may lose the last commits, never the database. Writes get about five times faster (each trial
makes some thirty of them; see benchmarks/storage.py)."""

STATE_CHANGE_LOCK_SUFFIX = "-lock"
"""The side file of :func:`state_change_lock`."""

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal", STATE_CHANGE_LOCK_SUFFIX)
"""Files kept beside a database (SQLite's write-ahead log, shared memory and rollback journal; the workers'
state-change lock, see :func:`state_change_lock`): part of it."""


def sqlite_storage(url: str, heartbeat: dict[str, Any], *, create: bool = True) -> RDBStorage:
    """SQLite file in WAL mode, connections with a busy timeout and WAL's usual ``synchronous=NORMAL``; the
    file's folder is created.

    WAL lets readers (dashboards, ``status``) run while a worker writes, and it is a property of the database
    file that persists once set, so it is switched on once here rather than on every connection. The busy
    timeout is per connection: ``sqlite3.connect(timeout=...)`` installs it on each one the pool opens.
    Without ``create`` (an existing database, opened to read) nothing is switched: the file stays as it is.
    """
    database = parse_url(url).database
    on_disk = bool(database) and database != ":memory:"
    wal = create and on_disk and _enable_wal(Path(database))
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    storage = rdb_storage(url, engine_kwargs, heartbeat, hint="Check that the folder is writable.")
    if on_disk:  # the lock file is the side file that sqlite_files names, so input checks cover the same path
        storage.state_change_lock = state_change_lock(Path(f"{sqlite_files(url)[0]}{STATE_CHANGE_LOCK_SUFFIX}"))
    if wal:
        sqlalchemy.event.listen(storage.engine, "connect", _set_wal_synchronous)
        storage.engine.dispose()  # the connections Optuna opened to create its tables do not have it yet
    return storage


def state_change_lock(path: Path) -> Callable[[], AbstractContextManager[None]]:
    """An exclusive lock on the file ``path`` (created on first use), for every process on this machine.

    Why: Optuna changes a trial's state by reading it ``FOR UPDATE`` and writing it only if it is unfinished.
    SQLite ignores ``FOR UPDATE``, and Python's driver begins the transaction only at the write, so two workers
    sweeping stale trials could both see a dead worker's trial RUNNING, both mark it FAIL, and both re-queue it:
    one crash, two retries. Under this lock the read and the write of one state change are one step. A
    separate file, not the database: closing a descriptor of the database would drop SQLite's own locks.
    """

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            yield

    return locked


def sqlite_files(url: str) -> list[Path]:
    """The database file of an SQLite URL and its side files, absolute; none for an in-memory database."""
    database = parse_url(url).database
    if not database:
        return []
    path = Path(database).expanduser().absolute()
    return [path, *(Path(f"{path}{suffix}") for suffix in SQLITE_SIDE_FILES)]


def check_sqlite_exists(url: str) -> None:
    """Raise :func:`no_storage` unless ``url`` names an intact SQLite file with Optuna's ``studies`` table.

    The file is opened read-only (``mode=ro``), so a read-only command creates nothing.
    """
    database = parse_url(url).database
    path = Path(database or "")
    if not database or database == ":memory:" or not path.is_file():
        raise no_storage(database or url, "no such file")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            found = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'").fetchone()
            _check_integrity(connection, path)
    except sqlite3.Error as error:
        raise no_storage(str(path), f"not an SQLite database: {error}") from None
    if found is None:
        raise no_storage(str(path), "an SQLite file without Optuna's tables")


def _set_wal_synchronous(connection: sqlite3.Connection, record: object) -> None:
    connection.execute(f"PRAGMA synchronous={SQLITE_WAL_SYNCHRONOUS}")


def _check_integrity(connection: sqlite3.Connection, path: Path) -> None:
    """Raise a :class:`StorageError` naming ``path`` when SQLite finds the database damaged (a torn write, a
    disk error): every later query would fail with Optuna's unspecific "an exception is raised during the
    commit". ``quick_check`` reads every page once: milliseconds for a study's database."""
    verdict = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
    if verdict != "ok":
        verdict = " ".join(verdict.replace("*** in database main ***", "").split())
        raise StorageError(f"SQLite database {str(path)!r} is corrupt ({verdict}); restore it from a backup, or "
                           f"see what is left with: sqlite3 {path} '.recover'")


def _enable_wal(path: Path) -> bool:
    """Switch the database to WAL (after checking an existing one is intact); False when its file system does
    not allow WAL."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.is_file() and path.stat().st_size > 0
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as connection:
            if existed:
                _check_integrity(connection, path)
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except (OSError, sqlite3.Error) as error:
        raise StorageError(f"cannot open SQLite database {str(path)!r}: {error}. Check the path.") from None
    if mode != "wal":
        logger.warning(
            "SQLite database %s stays in %r journal mode (its file system does not support WAL); "
            "concurrent workers may wait longer for the lock.",
            path,
            mode,
        )
    return mode == "wal"
