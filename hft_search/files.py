"""Outputs: a file or a whole folder appears complete under its final name, or not at all; and the rule for
which paths an output may take.

Why one module: ``export``, ``train``, ``predict``, ``report`` and the cache all write files that a reader (a
server, a browser, another worker) may open at any moment, and a crash half-way, or a bad input discovered
late, must leave the previous output untouched and no partial one behind. One writer does that for all of
them (temporary sibling, ``fsync``, ``os.replace``, ``fsync`` of the folder).

The rule for targets (:func:`check_output`): an output replaces only a regular file (or, for ``train``, a
folder) and only with ``--force``; never a symbolic link, a device, a pipe or a socket (replacing those
would silently write somewhere else or destroy something that is not an output), never the current folder
or one that holds it, never an input of the same command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from hft_search.exceptions import ExportError

OutputKind = Literal["file", "folder"]


def _umask_mode(full: int) -> int:
    """``full`` (0o666 for files, 0o777 for folders) less the process umask: what ``open``/``mkdir`` would give.

    ``mkstemp``/``mkdtemp`` create private (0o600/0o700) entries; outputs meant to be shared must not stay so.
    """
    mask = os.umask(0)
    os.umask(mask)
    return full & ~mask


def write_atomic(path: Path, blob: bytes, *, shared: bool = True) -> None:
    """Write ``blob`` to ``path`` so that no reader, and no crash, can ever expose a partial file.

    ``shared``: the file gets the permissions of the user's umask, like any new file (outputs); otherwise it
    stays private to its owner (0o600: cache entries).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        if shared:
            os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Write the output ``text`` to ``path`` (UTF-8) with :func:`write_atomic`, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (the entry's directory record), not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _kind_of(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "a device, pipe or socket"


def check_output(path: str | Path, *, force: bool, kind: OutputKind = "file",
                 inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse an output path that must not be written; return it, absolute.

    An existing target is replaced only with ``force``, and only when it is of the ``kind`` written (an empty
    folder counts as absent). ``inputs`` are files the command reads: an output may neither be one of them
    nor, for a folder, contain one.

    Raises:
        ExportError: one line naming the path, what it is, and what to do instead.
    """
    path = Path(path).expanduser().absolute()
    ancestor = path.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ExportError(f"cannot write {path}: {ancestor} is {_kind_of(ancestor)}, not a folder; choose a path "
                          "inside a folder")
    resolved = path.resolve()
    for source in (Path(p).expanduser().resolve() for p in inputs if p is not None):
        if source == resolved or (kind == "folder" and resolved in source.parents):
            raise ExportError(f"output {path} would overwrite the input {source}; write the output elsewhere")
    if kind == "folder" and (resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents):
        raise ExportError(f"output folder {path} is the current folder or holds it; name a new folder, "
                          "e.g. models/NAME")
    if not path.exists() and not path.is_symlink():
        return path
    found = _kind_of(path)
    if found != f"a {kind}":
        raise ExportError(f"output {path} is {found}; hft-search replaces only a {kind} (never a link, a device "
                          "or another kind of entry): choose another path")
    if force or (kind == "folder" and not any(path.iterdir())):
        return path
    raise ExportError(f"{kind} {path} already exists; pass --force to replace it (or choose another path)")


def _staging_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_abandoned_staging(path: Path) -> None:
    """Delete staging folders that a killed ``train`` left beside ``path`` (their process is gone).

    Staging folders are named ``.NAME.PID.RANDOM.tmp`` (or ``.old``), so one of a process that is still alive
    (another ``train`` writing the same output right now) is left alone.
    """
    for entry in path.parent.glob(f"{_staging_prefix(path)}*"):
        parts = entry.name[len(_staging_prefix(path)):].split(".")
        if len(parts) != 3 or parts[2] not in ("tmp", "old") or not parts[0].isdigit():
            continue
        try:
            os.kill(int(parts[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            continue  # a live process of another user


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``path``, on error it is removed.

    A folder cannot be swapped in one system call, so an existing ``path`` is first renamed aside and deleted
    only after the new folder is in place: at every instant ``path`` is either the old or the new folder.
    """
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(path)
    prefix = f"{_staging_prefix(path)}{os.getpid()}."
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=".tmp"))
    try:
        staging.chmod(_umask_mode(0o777))
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=".old"))
        os.replace(path, old / path.name)
    os.replace(staging, path)
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
