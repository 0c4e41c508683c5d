"""Outputs: a file or a whole folder appears complete under its final name, or not at all; and the rule for
which paths an output may take.

Why one module: ``export``, ``train``, ``predict``, ``report`` and the cache all write files that a reader (a
server, a browser, another worker) may open at any moment, and a crash half-way, a full disk, or a bad input
discovered late, must leave the previous output untouched and no partial one behind. One writer does that for
all of them (temporary sibling, ``fsync``, ``os.replace``, ``fsync`` of the folder), and removes the folders it
created when it fails.

The rule for targets (:func:`check_output`): an output replaces only a regular file (or, for ``train``, a
folder) and only with ``--force``; never a symbolic link, a device, a pipe or a socket (replacing those
would silently write somewhere else or destroy something that is not an output), never the current folder
or one that holds it. And, ``--force`` or not, an output is never one of the command's inputs, never holds
one and never lies inside one (:func:`refuse_inputs`; the inputs of each command: :mod:`hft_search.inputs`).

Operating-system failures of a write (a read-only folder, a full disk, also as ``safetensors`` reports them)
become one :class:`~hft_search.exceptions.OutputError` naming the path and the cause (:func:`os_failure`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from hft_search.exceptions import OutputError

OutputKind = Literal["file", "folder"]

Inputs = Iterable[tuple[str, str | Path | None]]
"""What a command reads, as ``(role, path)`` pairs: ``("the spec", "best.yaml")``; a None path is skipped."""

_CAUSES = {
    errno.ENOSPC: "no space left on the device: free some, or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted: free some space, or write elsewhere",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you may write to",
    errno.EPERM: "operation not permitted: choose a folder you may write to",
}
"""Errors of a write that are the place's fault, not hft-search's, and what to do about each."""

_OS_ERROR_CODE = re.compile(r"os error (\d+)")
"""How Rust libraries (``safetensors``) quote the operating system's error in their own exception's text."""
_OS_ERROR_TEXT = {"No space left on device": errno.ENOSPC, "Read-only file system": errno.EROFS}
"""``strerror`` texts of the causes above, for libraries that quote the text without the number."""


def _umask_mode(full: int) -> int:
    """``full`` (0o666 for files, 0o777 for folders) less the process umask: what ``open``/``mkdir`` would give.

    ``mkstemp``/``mkdtemp`` create private (0o600/0o700) entries; outputs meant to be shared must not stay so.
    """
    mask = os.umask(0)
    os.umask(mask)
    return full & ~mask


def os_failure(error: BaseException, path: str | Path) -> OutputError | None:
    """The :class:`OutputError` to raise instead of ``error``, when it (or an error behind it) is a read-only
    target, a permission or a full disk while writing ``path``; None for any other error."""
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = current.errno if isinstance(current, OSError) else None
        if code is None and (match := _OS_ERROR_CODE.search(str(current))):
            code = int(match[1])
        code = code or next((c for text, c in _OS_ERROR_TEXT.items() if text in str(current)), None)
        if code in _CAUSES:
            return OutputError(f"cannot write {path}: {_CAUSES[code]}")
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a read-only target or a full disk into one :class:`OutputError` naming ``path``."""
    try:
        yield
    except Exception as error:
        failure = os_failure(error, path)
        if failure is None:
            raise
        raise failure from None


@contextmanager
def new_folders(folder: Path) -> Iterator[None]:
    """Create ``folder`` with its missing parents; if the block fails, remove those that are still empty, so a
    failed output leaves no empty folder behind."""
    folder = Path(folder).absolute()
    missing = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        with _writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()
        raise


def write_atomic(path: Path, blob: bytes, *, shared: bool = True) -> None:
    """Write ``blob`` to ``path`` so that no reader, and no crash, can ever expose a partial file.

    ``shared``: the file gets the permissions of the user's umask, like any new file (outputs); otherwise it
    stays private to its owner (0o600: cache entries).

    Raises:
        OutputError: the folder is read-only or the disk is full (nothing is left behind).
    """
    path = Path(path)
    with _writing(path):
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
    """Write the output ``text`` to ``path`` (UTF-8) with :func:`write_atomic`, creating its folder (removed
    again if the write fails)."""
    path = Path(path)
    with new_folders(path.parent):
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


def refuse_inputs(path: str | Path, inputs: Inputs) -> None:
    """Raise when the output ``path`` is one of ``inputs``, holds one, or lies inside one (a folder input such
    as the model folder), after following links: ``--force`` replaces an earlier output, never an input.

    Raises:
        OutputError: one line naming the output, the input and its role.
    """
    path = Path(path).expanduser()
    resolved = path.resolve()
    for role, source in inputs:
        if source is None:
            continue
        found = Path(source).expanduser().resolve()
        if found == resolved or (found.exists() and resolved.exists() and os.path.samefile(found, resolved)):
            relation = "is"
        elif found in resolved.parents:
            relation = "lies inside"
        elif resolved in found.parents:
            relation = "holds"
        else:
            continue
        raise OutputError(f"output {path} {relation} {role} {found}; hft-search never writes an output "
                          "over, around or into an input (--force or not): write it elsewhere")


def check_output(path: str | Path, *, force: bool, kind: OutputKind = "file", inputs: Inputs = ()) -> Path:
    """Refuse an output path that must not be written; return it, absolute.

    An existing target is replaced only with ``force``, and only when it is of the ``kind`` written (an empty
    folder counts as absent). ``inputs`` are what the command reads (:func:`refuse_inputs`).

    Raises:
        OutputError: one line naming the path, what it is, and what to do instead.
    """
    path = Path(path).expanduser().absolute()
    ancestor = path.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {path}: {ancestor} is {_kind_of(ancestor)}, not a folder; choose a path "
                          "inside a folder")
    if kind == "folder" and (path.resolve() == Path.cwd().resolve() or path.resolve() in Path.cwd().resolve().parents):
        raise OutputError(f"output folder {path} is the current folder or holds it; name a new folder, "
                          "e.g. models/NAME")
    if path.exists() or path.is_symlink():
        found = _kind_of(path)
        if found != f"a {kind}":
            raise OutputError(f"output {path} is {found}; hft-search replaces only a {kind} (never a link, a "
                              "device or another kind of entry): choose another path")
    refuse_inputs(path, inputs)
    if not path.exists():
        return path
    if force or (kind == "folder" and not any(path.iterdir())):
        return path
    raise OutputError(f"{kind} {path} already exists; pass --force to replace it (or choose another path)")


def check_output_folder(folder: str | Path) -> Path:
    """Refuse a folder to write into (``report -o``) that is a symbolic link or not a folder; return it,
    absolute. Writing through a link would put the output somewhere the user did not name."""
    folder = Path(folder).expanduser().absolute()
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputError(f"output folder {folder} is {_kind_of(folder)}, not a folder: hft-search writes only "
                          "into a real folder (never through a link); name the folder itself, or a new one")
    return folder


def check_writable(path: str | Path) -> None:
    """Raise now, before any long work, if an output at ``path`` could not be created: the nearest existing
    folder on its way is read-only or out of space for even a small file."""
    folder = Path(path).expanduser().absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    with _writing(path):
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".hft-search-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)


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


def _share(folder: Path) -> None:
    """Give every file and folder under ``folder`` the permissions of the user's umask: libraries write some
    files private (``safetensors`` writes ``model.safetensors`` 0o600), and an output is one whole."""
    files, folders = _umask_mode(0o666), _umask_mode(0o777)
    for root, names, leaves in os.walk(folder):
        for name in names:
            os.chmod(Path(root, name), folders)
        for name in leaves:
            entry = Path(root, name)
            if not entry.is_symlink():
                os.chmod(entry, files)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``path``, on error it is removed.

    A folder cannot be swapped in one system call, so an existing ``path`` is first renamed aside and deleted
    only after the new folder is in place: at every instant ``path`` is either the old or the new folder.

    Raises:
        OutputError: the folder is read-only or the disk is full (also when the block found so); nothing of
            the new output is left, the old one is untouched.
    """
    path = Path(path).expanduser().resolve()
    with new_folders(path.parent), _writing(path):
        _remove_abandoned_staging(path)
        prefix = f"{_staging_prefix(path)}{os.getpid()}."
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=".tmp"))
        try:
            yield staging
            _share(staging)
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
