"""Journal storages: Optuna's append-only file, for shared file systems without a database server.

Why a module of its own: a journal names a path, not a database, is locked differently and has no heartbeat
(optuna#6615), so none of the SQL storages' settings apply to it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

from hft_search.exceptions import StorageError
from hft_search.storage._errors import no_storage

logger = logging.getLogger(__name__)


def journal_path(url: str) -> Path:
    """``journal:PATH`` → PATH; ``journal:///abs`` → ``/abs`` (a URL-style spelling of the same)."""
    rest = url.partition(":")[2]
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest:
        raise StorageError(f"storage URL {url!r} names no file: use journal:PATH, e.g. journal:studies.log.")
    return Path(rest).expanduser()


def journal_storage(url: str) -> JournalStorage:
    """Journal file locked by ``open(O_EXCL)``: works on any local file system (Optuna's default symlink lock
    needs a privilege on Windows) and on NFSv3 or later."""
    path = journal_path(url)
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


def check_journal_exists(url: str) -> None:
    """Raise :func:`no_storage` unless ``url`` names a journal file with at least one record; creates nothing."""
    path = journal_path(url)
    if not path.is_file() or path.stat().st_size == 0:
        raise no_storage(str(path), "no such journal file" if not path.exists() else "an empty file")


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
