"""How a storage failure reads to a user: the driver's own message, masked, and what to do about it.

Why a module of its own: every storage backend, the RDBStorage subclass and the command line report storage
errors, and each must say the same thing the same way, with no password in it.
"""

from __future__ import annotations

from optuna.exceptions import StorageInternalError

from hft_search.exceptions import StorageError
from hft_search.urls import mask_url

POSTGRES_INSTALL_HINT = 'pip install "hft_search[postgres]"  (psycopg 3; URLs postgresql+psycopg://...)'


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


def no_storage(where: str, why: str) -> StorageError:
    """The error of a read-only command pointed at a storage that does not exist (yet): it says which command
    creates one, since the usual cause is a mistyped ``--storage`` or a run not started."""
    return StorageError(f"no study storage at {where} ({why}); check --storage (or $HFT_SEARCH_STORAGE): "
                        "`hft-search run` creates a storage, the other commands only read one")


def missing_module(error: ImportError) -> str:
    """The module whose import failed; Optuna wraps the ``ModuleNotFoundError`` in its own ImportError."""
    cause = error.__cause__ if isinstance(error.__cause__, ImportError) else error
    return cause.name or str(cause)
