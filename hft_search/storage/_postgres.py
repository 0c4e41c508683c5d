"""PostgreSQL storages, reached directly or through PgBouncer in transaction pooling, for workers on many machines.

Why a module of its own: the pool sizes, the driver settings that survive PgBouncer and the schema check
that does not deadlock behind it are PostgreSQL's alone.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from hft_search.exceptions import StorageError
from hft_search.storage._errors import POSTGRES_INSTALL_HINT, error_summary, no_storage
from hft_search.storage._rdb import parse_url, rdb_storage
from hft_search.urls import mask_error, mask_url

POSTGRES_POOL = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2, "pool_recycle": 1800}
"""One trial at a time per worker, plus its heartbeat thread: two connections, two spare."""

POSTGRES_CONNECT_TIMEOUT_S = 10
"""Fail fast on an unreachable host instead of waiting on the operating system's TCP timeout."""


def postgres_storage(url: str, heartbeat: dict[str, Any]) -> RDBStorage:
    """The storage of a PostgreSQL URL: a small pre-pinged pool, PgBouncer-safe driver settings, and the schema
    version checked one connection at a time (see :func:`check_schema_version`)."""
    url = _postgres_url(url)
    engine_kwargs = {**POSTGRES_POOL, "connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
                                                       **pgbouncer_safe_connect_args(url)}}
    storage = rdb_storage(url, engine_kwargs, {**heartbeat, "skip_compatibility_check": True},
                          hint=_postgres_start_hint(url))
    check_schema_version(storage, url)
    return storage


def check_postgres_exists(url: str) -> None:
    """Raise :func:`no_storage` unless the database of ``url`` holds Optuna's ``studies`` table; creates nothing."""
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
        raise no_storage(mask_url(url), "a database without Optuna's tables")


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
    driver = parse_url(url).get_driver_name()
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


def _postgres_url(url: str) -> str:
    """Plain ``postgresql://`` means psycopg2 to SQLAlchemy: use psycopg 3 (our extra) without psycopg2."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        return f"postgresql+psycopg://{rest}"
    return url


def _postgres_start_hint(url: str) -> str:
    """How to check that the server of ``url`` runs, and to start one: the usual cause of a refused connection."""
    parsed = parse_url(url)
    host, port = parsed.host or "localhost", parsed.port or 5432
    return (
        f"Is PostgreSQL running on {host}:{port} and does database {parsed.database!r} exist? "
        f"Check with `pg_isready -h {host} -p {port}`; start one with `docker compose up -d postgres` "
        "(see docker-compose.yml)."
    )
