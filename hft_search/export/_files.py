"""Atomic outputs: a file or a whole folder appears complete under its final name, or not at all.

Why: ``export`` and ``predict`` overwrite user files and ``train`` replaces a model folder that a server may be
reading. A crash half-way (or a bad input discovered late) must leave the previous output untouched and no
partial one behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hft_search.caching import _write_atomic  # one atomic writer for the project
from hft_search.exceptions import ExportError


def _umask_mode(full: int) -> int:
    """``full`` (0o666 for files, 0o777 for folders) less the process umask: what ``open``/``mkdir`` would give.

    ``mkstemp``/``mkdtemp`` create private (0o600/0o700) entries; outputs meant to be shared must not stay so.
    """
    mask = os.umask(0)
    os.umask(mask)
    return full & ~mask


def check_writable(path: Path, *, force: bool, what: str = "file") -> None:
    """Refuse to replace an existing output unless ``force``; an empty folder counts as absent."""
    if force or not path.exists():
        return
    if path.is_dir() and what == "folder" and not any(path.iterdir()):
        return
    raise ExportError(f"{what} {path} already exists; pass --force to replace it (or choose another path)")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling file and ``os.replace`` (the cache's writer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, text.encode("utf-8"))
    path.chmod(_umask_mode(0o666))


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``path``, on error it is removed.

    A folder cannot be swapped in one system call, so an existing ``path`` is first renamed aside and deleted
    only after the new folder is in place: at every instant ``path`` is either the old or the new folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        staging.chmod(_umask_mode(0o777))
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.replace(path, old / path.name)
    os.replace(staging, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
