"""Storage URLs → Optuna storages: which URL a command uses, checking it, opening it, and finding a study in it.

Why a module of its own: the commands know URLs, not backends; this is the one place that dispatches a URL to
the SQLite, PostgreSQL or journal module, so that every command opens (or refuses) a URL the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from hft_search.exceptions import StorageError
from hft_search.storage._journal import check_journal_exists, journal_path, journal_storage
from hft_search.storage._postgres import check_postgres_exists, postgres_storage
from hft_search.storage._rdb import heartbeat_kwargs, parse_url
from hft_search.storage._sqlite import check_sqlite_exists, sqlite_files, sqlite_storage
from hft_search.urls import storage_kind, storage_url_problem

DEFAULT_STORAGE_URL = "sqlite:///hft.db"
STORAGE_ENV_VAR = "HFT_SEARCH_STORAGE"


def resolve_storage_url(cli: str | None, spec_storage: str | None) -> str:
    """The storage URL to use: ``--storage``, else ``$HFT_SEARCH_STORAGE``, else the spec's, else the default.

    The environment sits between the command line and the spec so that a deployment (docker compose, a job
    script) can point every worker at its database without editing the spec the study was designed with.
    """
    for candidate in (cli, os.environ.get(STORAGE_ENV_VAR), spec_storage):
        if candidate:
            return candidate
    return DEFAULT_STORAGE_URL


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
        return journal_storage(url)
    heartbeat = heartbeat_kwargs(heartbeat_interval, grace_period, max_retries)
    if scheme == "sqlite":
        return sqlite_storage(url, heartbeat, create=not must_exist)
    return postgres_storage(url, heartbeat)


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
        journal_path(url)
    else:
        parse_url(url)
    return kind


def storage_files(url: str) -> list[Path]:
    """The local files a storage URL names, absolute: an SQLite database with its side files, a journal with
    its lock file; none for a database server. What no output may replace (:mod:`hft_search.inputs`)."""
    kind = check_url(url)
    if kind == "journal":
        path = journal_path(url).absolute()
        return [path, Path(f"{path}.lock")]
    return sqlite_files(url) if kind == "sqlite" else []


def _check_exists(url: str, scheme: str) -> None:
    """Raise a :class:`StorageError` unless ``url`` names a storage that Optuna has already written, touching
    nothing: a read-only command must not leave an empty database behind a mistyped URL."""
    if scheme == "journal":
        check_journal_exists(url)
    elif scheme == "sqlite":
        check_sqlite_exists(url)
    else:
        check_postgres_exists(url)


def delete_study_if_exists(name: str, storage: str | BaseStorage) -> bool:
    """Delete study ``name`` from ``storage``; False when there was none (tests clean up with this)."""
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        return False
    return True


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
