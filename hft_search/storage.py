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

URLs carry passwords, so everything this module reports goes through :func:`mask_url`, and
:func:`install_log_masking` makes the ``hft_search`` and ``optuna`` logs do the same.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import random
import re
import sqlite3
import time
import traceback
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

from hft_search._optuna_compat import StaleSweepHookStorage, experimental, retry_callback, running_without_heartbeat
from hft_search.exceptions import StorageError
from hft_search.urls import ACCEPTED_FORMS, MASK, mask_url, storage_kind, storage_url_problem, url_password

logger = logging.getLogger(__name__)

DEFAULT_STORAGE_URL = "sqlite:///hft.db"
STORAGE_ENV_VAR = "HFT_SEARCH_STORAGE"
POSTGRES_INSTALL_HINT = 'pip install "hft_search[postgres]"  (psycopg 3; URLs postgresql+psycopg://...)'

SQLITE_BUSY_TIMEOUT_S = 60
"""How long an SQLite writer waits for the lock; a trial's writes are tiny, so a minute means a stuck peer."""

SQLITE_WAL_SYNCHRONOUS = "NORMAL"
"""SQLite's advice for WAL: commits are not flushed to disk one by one. A worker that crashes loses nothing;
a power cut may lose the last commits, never the database. Writes get about five times faster (each trial
makes some thirty of them; see benchmarks/storage.py)."""

POSTGRES_POOL = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2, "pool_recycle": 1800}
"""One trial at a time per worker, plus its heartbeat thread: two connections, two spare."""

POSTGRES_CONNECT_TIMEOUT_S = 10
"""Fail fast on an unreachable host instead of waiting on the operating system's TCP timeout."""

SCHEMA_CREATION_ATTEMPTS = 5
"""Workers started together on an empty database all create Optuna's tables; all but one lose that race
(a table or the schema version already exists) and simply try again, when the tables are there."""



def resolve_storage_url(cli: str | None, spec_storage: str | None) -> str:
    """The storage URL to use: ``--storage``, else ``$HFT_SEARCH_STORAGE``, else the spec's, else the default.

    The environment sits between the command line and the spec so that a deployment (docker compose, a job
    script) can point every worker at its database without editing the spec the study was designed with.
    """
    for candidate in (cli, os.environ.get(STORAGE_ENV_VAR), spec_storage):
        if candidate:
            return candidate
    return DEFAULT_STORAGE_URL


def mask_error(text: str, url: str) -> str:
    """``text`` (a driver's error about ``url``) with URLs masked, and every piece of ``url``'s password too.

    A password with a raw ``@`` or ``/`` is misread by SQLAlchemy: part of it becomes the host or the database
    name, and the driver quotes that part (``could not translate host name "ss3cr3t@127.0.0.1"``) where no URL
    pattern can see it. So the password, its percent-decoded form and their pieces between such characters
    (three characters or more) are masked wherever they appear.
    """
    masked = mask_url(text)
    password = url_password(url)
    if password is None:
        return masked
    pieces = {piece for form in (password, urllib.parse.unquote(password))
              for piece in (form, *re.split(r"[@/:?#]", form)) if len(piece) >= 3}
    for piece in sorted(pieces, key=len, reverse=True):
        masked = masked.replace(piece, MASK)
    return masked


class MaskingFilter(logging.Filter):
    """Mask credentials of URLs in log records: the formatted message, the traceback and the stack.

    Never drops a record. The record's ``msg``/``args`` are replaced by the masked text only when there was
    something to mask, so other records reach the handlers unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = mask_url(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_url(record.stack_info)
        return True


def install_log_masking(logger_names: Iterable[str] = ("hft_search", "optuna")) -> None:
    """Install :class:`MaskingFilter` where it sees every record of the named loggers. Idempotent.

    A filter on a logger only sees records logged on that very logger, not on its children
    (``hft_search.study``, ``optuna.storages._rdb.storage``), so the filter also goes on the handlers that
    emit those records: the named loggers' own handlers (Optuna installs one) and the root logger's (where
    records propagate). Call it after logging is configured; handlers added later are not covered.
    """
    targets: list[logging.Logger | logging.Handler] = list(logging.getLogger().handlers)
    for name in logger_names:
        named = logging.getLogger(name)
        targets += [named, *named.handlers]
    for target in targets:
        if not any(isinstance(existing, MaskingFilter) for existing in target.filters):
            target.addFilter(MaskingFilter())


def remove_log_masking(logger_names: Iterable[str] = ("hft_search", "optuna")) -> None:
    """Undo :func:`install_log_masking` for the root logger's handlers and the named loggers.

    Handlers outlive the code that installed the filter (a test runner reuses its capture handlers), so a
    process that embeds hft_search and wants its records untouched can take the filters off again.
    """
    targets: list[logging.Logger | logging.Handler] = list(logging.getLogger().handlers)
    for name in logger_names:
        named = logging.getLogger(name)
        targets += [named, *named.handlers]
    for target in targets:
        for added in [f for f in target.filters if isinstance(f, MaskingFilter)]:
            target.removeFilter(added)


def make_storage(
    url: str, *, heartbeat_interval: int = 60, grace_period: int | None = None, max_retries: int = 3,
    must_exist: bool = False,
) -> BaseStorage:
    """Open (creating if needed, unless ``must_exist``) the storage named by ``url``.

    Args:
        url: ``sqlite:///PATH``, ``postgresql[+DRIVER]://...`` or ``journal:PATH`` (also ``journal:///ABS``).
        heartbeat_interval: seconds between heartbeats of a running trial (RDB storages).
        grace_period: seconds without a heartbeat after which a trial counts as dead; Optuna's default,
            ``2 * heartbeat_interval``, when None.
        max_retries: how many times the parameters of a dead worker's trial are re-queued.
        must_exist: open an existing storage only, creating nothing (no folder, no file, no table): the mode
            of the commands that only read a study (``status``, ``best``, ``report``, ``export``).

    Raises:
        StorageError: the URL has none of the accepted forms, or the storage cannot be opened. The message
            names the URL with its password masked and says how to fix it.
    """
    scheme = check_url(url)
    if must_exist:
        _check_exists(url, scheme)
    if scheme == "journal":
        return _journal_storage(url)
    heartbeat = _heartbeat_kwargs(heartbeat_interval, grace_period, max_retries)
    if scheme == "sqlite":
        return _sqlite_storage(url, heartbeat, create=not must_exist)
    return _postgres_storage(url, heartbeat)


def check_url(url: str) -> str:
    """The storage kind of ``url`` (``sqlite``, ``postgresql``, ``journal``), checked without opening anything.

    ``run`` calls it before loading data and model, so that a mistyped URL fails at once, and opens the
    storage only after them, so that a run that fails on its data or model leaves no empty database behind.
    """
    problem = storage_url_problem(url)
    if problem is not None:
        raise StorageError(f"{problem}.")
    kind = storage_kind(url)
    if kind == "journal":
        _journal_path(url)
    else:
        _parse_url(url)
    return kind


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database (write-ahead log, shared memory, rollback journal): part of it."""


def storage_files(url: str) -> list[Path]:
    """The local files a storage URL names, absolute: an SQLite database with its side files, a journal with
    its lock file; none for a database server. What no output may replace (:mod:`hft_search.inputs`)."""
    kind = check_url(url)
    if kind == "journal":
        path = _journal_path(url).absolute()
        return [path, Path(f"{path}.lock")]
    database = _parse_url(url).database if kind == "sqlite" else None
    if not database:
        return []
    path = Path(database).expanduser().absolute()
    return [path, *(Path(f"{path}{suffix}") for suffix in SQLITE_SIDE_FILES)]


def _no_storage(where: str, why: str) -> StorageError:
    return StorageError(f"no study storage at {where} ({why}); check --storage (or $HFT_SEARCH_STORAGE): "
                        "`hft-search run` creates a storage, the other commands only read one")


def _check_exists(url: str, scheme: str) -> None:
    """Raise :func:`_no_storage` unless ``url`` names a storage that Optuna has already written, touching nothing.

    An SQLite file is opened read-only (``mode=ro``) to look for Optuna's ``studies`` table; a PostgreSQL
    database is inspected for it; a journal file must exist and hold at least one record.
    """
    if scheme == "journal":
        path = _journal_path(url)
        if not path.is_file() or path.stat().st_size == 0:
            raise _no_storage(str(path), "no such journal file" if not path.exists() else "an empty file")
        return
    if scheme == "sqlite":
        database = _parse_url(url).database
        path = Path(database or "")
        if not database or database == ":memory:" or not path.is_file():
            raise _no_storage(database or url, "no such file")
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
                found = connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'").fetchone()
                _check_integrity(connection, path)
        except sqlite3.Error as error:
            raise _no_storage(str(path), f"not an SQLite database: {error}") from None
        if found is None:
            raise _no_storage(str(path), "an SQLite file without Optuna's tables")
        return
    engine = sqlalchemy.create_engine(
        _postgres_url(url), connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S})
    try:
        found = sqlalchemy.inspect(engine).has_table("studies")
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
        summary = mask_error(error_summary(error), url) if not isinstance(error, ImportError) \
            else f"{error}; {POSTGRES_INSTALL_HINT}"
        raise StorageError(f"cannot open {mask_url(url)!r}: {summary}\n{mask_error(_postgres_start_hint(url), url)}") \
            from None
    finally:
        engine.dispose()
    if not found:
        raise _no_storage(mask_url(url), "a database without Optuna's tables")


def delete_study_if_exists(name: str, storage: str | BaseStorage) -> bool:
    """Delete study ``name`` from ``storage``; False when there was none (tests clean up with this)."""
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        return False
    return True


def _heartbeat_kwargs(heartbeat_interval: int, grace_period: int | None, max_retries: int) -> dict[str, Any]:
    """RDBStorage arguments for heartbeats and the retry of trials whose worker died
    (:func:`hft_search._optuna_compat.retry_callback`)."""
    return {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "heartbeat_stale_trial_callback": retry_callback(max_retries),
    }


def _sqlite_storage(url: str, heartbeat: dict[str, Any], *, create: bool = True) -> RDBStorage:
    """SQLite file in WAL mode, connections with a busy timeout and WAL's usual ``synchronous=NORMAL``; the
    file's folder is created.

    WAL lets readers (dashboards, ``status``) run while a worker writes, and it is a property of the database
    file that persists once set, so it is switched on once here rather than on every connection. The busy
    timeout is per connection: ``sqlite3.connect(timeout=...)`` installs it on each one the pool opens.
    Without ``create`` (an existing database, opened to read) nothing is switched: the file stays as it is.
    """
    database = _parse_url(url).database
    wal = create and bool(database) and database != ":memory:" and _enable_wal(Path(database))
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    storage = _rdb_storage(url, engine_kwargs, heartbeat, hint="Check that the folder is writable.")
    if wal:
        sqlalchemy.event.listen(storage.engine, "connect", _set_wal_synchronous)
        storage.engine.dispose()  # the connections Optuna opened to create its tables do not have it yet
    return storage


def _set_wal_synchronous(connection: sqlite3.Connection, record: object) -> None:
    connection.execute(f"PRAGMA synchronous={SQLITE_WAL_SYNCHRONOUS}")


def _parse_url(url: str) -> sqlalchemy.URL:
    try:
        return sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise StorageError(f"malformed URL {mask_url(url)!r} ({error}): use {ACCEPTED_FORMS}.") from None


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


def _postgres_url(url: str) -> str:
    """Plain ``postgresql://`` means psycopg2 to SQLAlchemy: use psycopg 3 (our extra) without psycopg2."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        return f"postgresql+psycopg://{rest}"
    return url


def _postgres_storage(url: str, heartbeat: dict[str, Any]) -> RDBStorage:
    url = _postgres_url(url)
    engine_kwargs = {**POSTGRES_POOL, "connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
                                                       **pgbouncer_safe_connect_args(url)}}
    storage = _rdb_storage(url, engine_kwargs, {**heartbeat, "skip_compatibility_check": True},
                           hint=_postgres_start_hint(url))
    check_schema_version(storage, url)
    return storage


def pgbouncer_safe_connect_args(url: str) -> dict[str, Any]:
    """Driver settings that let the same URL reach PostgreSQL directly or through PgBouncer in transaction mode.

    In transaction pooling, PgBouncer hands each transaction to whichever server connection is free, so
    nothing tied to a server session survives between two transactions. psycopg 3 prepares a statement on the
    server once it has run it five times (``prepare_threshold``), then executes it by name: through PgBouncer
    1.18 that name is unknown on the next server connection, or already taken there ("prepared statement
    "_pg3_0" does not exist" / "already exists").
    So psycopg 3 is told never to prepare (``prepare_threshold=None``). It costs nothing that shows here:
    Optuna's statements are small and parse in microseconds, and a worker spends well under 1 % of a trial
    in storage calls either way (``benchmarks/connections.py``). psycopg2 never prepares on the server.
    Optuna's storage keeps no other session state (no ``SET``, advisory locks or ``LISTEN``): its locking
    is ``SELECT ... FOR UPDATE`` inside a transaction, which transaction pooling keeps on one connection.
    """
    driver = _parse_url(url).get_driver_name()
    return {"prepare_threshold": None} if driver == "psycopg" else {}


def check_schema_version(storage: RDBStorage, url: str) -> None:
    """Optuna's check that the tables have this Optuna's schema, using one connection at a time.

    Optuna's own check (``RDBStorage(skip_compatibility_check=False)``) reads the schema version on a second
    connection while its first holds a transaction open. Behind PgBouncer in transaction pooling, as many
    workers starting at once as the pool has server connections then each hold one and wait for another, until
    PgBouncer's ``query_wait_timeout`` fails them all (seen with 16 workers on a pool of 4). So PostgreSQL
    storages skip that check and make it here instead.
    """
    current, head = storage.get_current_version(), storage.get_head_version()
    if current == head:
        return
    fix = ("upgrade them with `optuna storage upgrade --storage URL`" if current in storage.get_all_versions()
           else 'update Optuna with `pip install -U "optuna>=5.0"`')
    raise StorageError(f"the tables in {mask_url(url)!r} have Optuna schema version {current!r}, and Optuna "
                       f"{optuna.__version__} needs {head!r}: {fix}.")


def _postgres_start_hint(url: str) -> str:
    parsed = _parse_url(url)
    host, port = parsed.host or "localhost", parsed.port or 5432
    return (
        f"Is PostgreSQL running on {host}:{port} and does database {parsed.database!r} exist? "
        f"Check with `pg_isready -h {host} -p {port}`; start one with `docker compose up -d postgres` "
        "(see docker-compose.yml)."
    )


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

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (sqlalchemy.exc.SQLAlchemyError, StorageInternalError) as error:
            logger.warning("heartbeat of trial id %d not recorded (%s); trying again in %d s",
                           trial_id, error_summary(error), self.heartbeat_interval)

    def before_stale_sweep(self, study_id: int) -> None:
        for trial_id in running_without_heartbeat(self, study_id):
            super().record_heartbeat(trial_id)


def _lost_schema_race(error: BaseException) -> bool:
    """Whether creating Optuna's tables failed because another worker was creating them at the same time."""
    return isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error)


def _rdb_storage(
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
        driver = _missing_module(error)
        raise StorageError(
            f"cannot open {mask_url(url)!r}: the database driver {driver!r} is not installed. "
            f"Install it with: {POSTGRES_INSTALL_HINT}"
        ) from None


def _missing_module(error: ImportError) -> str:
    """The module whose import failed; Optuna wraps the ``ModuleNotFoundError`` in its own ImportError."""
    cause = error.__cause__ if isinstance(error.__cause__, ImportError) else error
    return cause.name or str(cause)


def error_summary(error: BaseException) -> str:
    """The driver's own message of a storage error (without SQLAlchemy's wrapper and background link, and
    without Optuna's, which says only that "an exception is raised during the commit"), masked, on one line."""
    if isinstance(error, StorageInternalError) and error.__cause__ is not None:
        error = error.__cause__
    original = getattr(error, "orig", None) or error
    return mask_url(" ".join(str(original).split()))


def storage_failure(error: BaseException, url: str | None) -> str:
    """One line for a storage that failed after it was opened: the storage (masked), the driver's message,
    and where to look."""
    where = f" {mask_url(url)}" if url else ""
    return (f"the study storage{where} failed: {error_summary(error)}; if it is an SQLite file it may be "
            "corrupt (check it with: sqlite3 FILE 'PRAGMA integrity_check'); --verbose shows the traceback")


def _journal_path(url: str) -> Path:
    """``journal:PATH`` → PATH; ``journal:///abs`` → ``/abs`` (a URL-style spelling of the same)."""
    rest = url.partition(":")[2]
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest:
        raise StorageError(f"storage URL {url!r} names no file: use journal:PATH, e.g. journal:studies.log.")
    return Path(rest).expanduser()


def _journal_storage(url: str) -> JournalStorage:
    """Journal file locked by ``open(O_EXCL)``: works on any local file system (Optuna's default symlink lock
    needs a privilege on Windows) and on NFSv3 or later."""
    path = _journal_path(url)
    try:
        _check_journal(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    except OSError as error:
        raise StorageError(f"cannot open journal file {str(path)!r}: {error}. Check the path.") from None
    logger.info(
        "journal storage %s: Optuna %s journals have no heartbeat, so a trial whose worker dies stays "
        "RUNNING; use sqlite:/// or postgresql:// to have such trials retried.",
        path,
        optuna.__version__,
    )
    return JournalStorage(backend)


def _check_journal(path: Path) -> None:
    """Refuse an existing file that is not an Optuna journal (a data file, a database, any text) before
    Optuna appends its records to it: its first line must be one of Optuna's JSON records."""
    if path.exists() and not path.is_file():
        raise StorageError(f"{str(path)!r} is {'a folder' if path.is_dir() else 'not a regular file'}, not a "
                           "journal file; name a journal file, or a new path")
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as handle:
        first = handle.readline(1 << 20)
    try:
        record = json.loads(first)
    except ValueError:  # not UTF-8, not JSON
        record = None
    if not (isinstance(record, dict) and "op_code" in record):
        raise StorageError(f"{str(path)!r} is not an Optuna journal (its first line is no journal record); "
                           "name a journal file written by hft-search, or a new path")


def load_named_study(study_name: str, storage: BaseStorage, storage_label: str) -> optuna.Study:
    """The study ``study_name``, or a :class:`StorageError` that lists the studies the storage does hold.

    ``storage_label`` is how the storage is named in the message: a masked URL, never one with a password.
    """
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = sorted(frozen.study_name for frozen in storage.get_all_studies())
        listing = ", ".join(repr(name) for name in names) or "none"
        raise StorageError(
            f"no study {study_name!r} in {storage_label}; studies there: {listing}. "
            "Pass one of them with --study (names are case-sensitive)."
        ) from None
