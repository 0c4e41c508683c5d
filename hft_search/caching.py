"""A content-addressed on-disk cache for the expensive, trial-independent inputs of the CV objective.

Tokenized data, importance scores per (model, fold, score kind, batches) and teacher logits per (teacher
setting, fold) do not depend on the trial's sampled knobs, so every trial of a study — in any worker process —
can share them. In particular the teacher is fine-tuned once per fold per study, not once per trial.

An entry is addressed by :meth:`Cache.key`: a sha256 of its *kind* and a canonical JSON form of the *parts*
that determine it (model, data fingerprint, fold, ...). Change any part and the key changes, so a stale entry
is never returned; nothing ever needs to be invalidated by hand.

Layout and guarantees:

* one file per entry, ``root/<kind>/<key[:2]>/<key>.pt``: a fixed header (magic, sha256 of the payload,
  payload length) followed by the ``torch.save`` payload. The checksum makes a truncated or bit-flipped entry
  *detected* (warning, ``corrupt`` counted, file deleted, value recomputed) rather than returned;
* writes are atomic: the payload goes to a temporary file in the same folder, is fsync'ed, then
  ``os.replace``'d onto the entry's name, so a reader sees either no entry or a complete one;
* values are restricted to what ``torch.load(weights_only=True)`` accepts (tensors, dicts, lists, tuples,
  sets, numbers, strings, bytes, ``None``, dtypes, devices). A cache folder may be shared by many machines,
  and loading it must never run arbitrary pickled code; :meth:`Cache.get_or_compute` rejects other values
  when they are *stored*, naming where in the value the offending object sits;
* safe across processes: the first process to miss takes an advisory ``fcntl.flock`` on ``<key>.lock`` next to
  the entry, checks again, computes and writes; the others block on the lock and then read its result, so
  an entry is computed once in total. The kernel releases a ``flock`` when its holder dies, so a crashed
  worker never leaves the others waiting forever; its half-written temporary file is removed by the next
  holder of the lock. Lock files are left in place on purpose: deleting one while another process waits on
  it would let a third process lock a fresh file and compute the same entry concurrently. POSIX only.

Entries are loaded onto the CPU; callers move them to their device.
"""

from __future__ import annotations

import enum
import fcntl
import functools
import hashlib
import io
import json
import logging
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any, TypeVar

import numpy as np
import torch

from hft_search.files import write_atomic

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Bumped whenever the file format or the key derivation changes, so old entries are simply never found.
FORMAT_VERSION = 2

_MAGIC = b"HFTCACHE"
_HEADER = struct.Struct(f">{len(_MAGIC)}s32sQ")  # magic, sha256 of the payload, payload length
_KIND = re.compile(r"[a-z0-9][a-z0-9_\-]*")
_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Tensor,
           torch.nn.Parameter)
_SEQUENCES = (list, tuple, set, torch.Size)
_MAPPINGS = (dict, OrderedDict)

CODE_PACKAGES = ("hft_search", "torch", "transformers")
"""The packages whose code computes cache entries (tokenization, importance scores, teacher fine-tunes)."""


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """``{package: version}`` of the installed distributions ("not installed" for a missing one)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def code_versions() -> dict[str, str]:
    """Installed versions of :data:`CODE_PACKAGES`, part of every cache key."""
    return installed_versions(CODE_PACKAGES)


def folder_digest(path: str | Path) -> str:
    """sha256 of a checkpoint folder's content (relative names and bytes of every file), or of one file.

    Why content, not the path: a checkpoint overwritten in place must not keep serving the logits of the
    model that was there before. The hash is remembered per (names, sizes, modification times), so a
    worker reads a large checkpoint once, not once per fold.
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(root, signature)


@functools.lru_cache(maxsize=16)
def _digest(root: Path, signature: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in signature:
        file = Path(name)
        if file != root:
            digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


class _CorruptEntry(Exception):
    """An entry file cannot be trusted; internal to this module, always handled by recomputing."""


def canonical_json(parts: Mapping[str, Any]) -> str:
    """The one JSON text of ``parts``: sorted keys, no whitespace, non-JSON values mapped deterministically.

    Paths become their POSIX string, tuples lists, sets sorted lists, enums their value, numpy scalars Python
    numbers, dtypes their name. Anything else raises ``TypeError`` naming the part: falling back to ``repr``
    could silently put a memory address into the key and make every lookup miss.
    """
    return json.dumps(_jsonable(parts, "parts"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, enum.Enum):  # before the scalars: an IntEnum or StrEnum is also an int or a str
        return _jsonable(value.value, where)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_jsonable(v, f"{where}{{...}}") for v in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    raise TypeError(f"cache key {where} is a {type(value).__name__}, which has no stable JSON form; "
                    "pass a str, number, bool, None, Path, enum, or a list/tuple/set/dict of those")


def _check_storable(value: Any, where: str = "value") -> None:
    """Raise ``TypeError`` unless ``value`` loads back with ``torch.load(weights_only=True)``.

    Types are matched exactly (not by ``isinstance``): a subclass such as a ``defaultdict`` or a ``StrEnum``
    pickles as its own class, which the weights-only loader refuses, as it refuses numpy arrays.
    """
    kind = type(value)
    if kind in _LEAVES:
        return
    if kind in _MAPPINGS:
        for k, v in value.items():
            _check_storable(k, f"{where} key {k!r}")
            _check_storable(v, f"{where}[{k!r}]")
        return
    if kind in _SEQUENCES:
        for i, v in enumerate(value):
            _check_storable(v, f"{where}[{i}]")
        return
    raise TypeError(f"cache {where} is a {kind.__module__}.{kind.__qualname__}, which "
                    "torch.load(weights_only=True) cannot read back; store tensors, numbers, str, bytes, "
                    "None and dicts/lists/tuples of those (convert numpy arrays with torch.from_numpy, "
                    "dataclasses with a to_dict method)")


def _encode(value: Any) -> bytes:
    """Header + ``torch.save`` payload of ``value``; the header carries the payload's sha256 and length."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    payload = buffer.getvalue()
    return _HEADER.pack(_MAGIC, hashlib.sha256(payload).digest(), len(payload)) + payload


def _decode(blob: bytes) -> Any:
    """The value of an entry's bytes, or :class:`_CorruptEntry` saying why they cannot be trusted."""
    if len(blob) < _HEADER.size:
        raise _CorruptEntry(f"{len(blob)} bytes, shorter than the {_HEADER.size}-byte header")
    magic, digest, length = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size:]
    if magic != _MAGIC:
        raise _CorruptEntry(f"unknown header {magic!r}")
    if len(payload) != length:
        raise _CorruptEntry(f"payload is {len(payload)} bytes, the header says {length} (truncated write?)")
    if hashlib.sha256(payload).digest() != digest:
        raise _CorruptEntry("payload checksum mismatch")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # a checksummed payload torch cannot read: stale format, still not returnable
        raise _CorruptEntry(f"torch.load failed: {error}") from error


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if needed); released on exit or by the kernel on death."""
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Cache:
    """Content-addressed on-disk cache shared by every process that points at the same ``root``.

    Args:
        root: folder of the cache, created on first write. ``None`` disables caching: every call computes
            (and counts a miss), which keeps the calling code identical with and without a cache.

    ``stats`` counts hits, misses and corrupt entries per kind, and every hit or miss is logged at INFO
    (``cache hit: teacher_logits 3fa2c1d9e0ab``), so tests and users can count reuse rather than time it.
    """

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self._stats: dict[str, dict[str, int]] = {}
        self._stats_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """``{kind: {"hits": n, "misses": n, "corrupt": n}}`` for this ``Cache`` object (a copy)."""
        with self._stats_lock:
            return {kind: dict(counts) for kind, counts in self._stats.items()}

    @staticmethod
    def key(kind: str, parts: Mapping[str, Any]) -> str:
        """Hex sha256 of the format version, the code's versions, ``kind`` and the canonical JSON of ``parts``.

        The versions of the packages that compute the entries (:func:`code_versions`) are part of every key:
        after an upgrade, entries are recomputed instead of reused, since new code may compute other values.
        """
        _check_kind(kind)
        material = (f"hft_search-cache/{FORMAT_VERSION}\n{canonical_json(code_versions())}\n{kind}\n"
                    f"{canonical_json(parts)}")
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def path(self, kind: str, key: str) -> Path:
        """Where the entry ``key`` of ``kind`` lives (whether or not it exists yet)."""
        if self.root is None:
            raise RuntimeError("a disabled Cache (root=None) has no entry paths")
        return self.root / kind / key[:2] / f"{key}.pt"

    def get_or_compute(self, kind: str, parts: Mapping[str, Any], compute: Callable[[], T]) -> T:
        """The cached value for ``(kind, parts)``, calling ``compute()`` and storing its result on a miss.

        Across processes sharing ``root``, ``compute`` runs once per key: concurrent callers wait for the
        first and read its result. If ``compute`` raises, nothing is stored and the error propagates.
        """
        key = self.key(kind, parts)
        if self.root is None:
            return self._computed(kind, key, compute)
        path = self.path(kind, key)
        found = self._read(kind, key, path, quiet=True)  # lock-free fast path: entries appear atomically
        if found is not None:
            return found[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_suffix(".lock")):
            found = self._read(kind, key, path, quiet=False)  # another process may have written it meanwhile
            if found is not None:
                return found[0]
            _remove_leftovers(path)
            value = self._computed(kind, key, compute)
            _check_storable(value, f"value of kind {kind!r}")
            write_atomic(path, _encode(value), shared=False)
        return value

    def _read(self, kind: str, key: str, path: Path, *, quiet: bool) -> tuple[Any] | None:
        """``(value,)`` on a hit, ``None`` if absent or corrupt; corrupt entries are deleted unless ``quiet``.

        Deleting is only safe while holding the entry's lock (else a fresh entry written by another process
        could be deleted), so the lock-free fast path is ``quiet`` and leaves the verdict to the locked check.
        """
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            value = _decode(blob)
        except _CorruptEntry as error:
            if not quiet:
                logger.warning("cache entry %s is corrupt (%s); deleting it and recomputing", path, error)
                self._count(kind, "corrupt")
                path.unlink(missing_ok=True)
            return None
        self._count(kind, "hits")
        logger.info("cache hit: %s %s", kind, key[:12])
        return (value,)

    def _computed(self, kind: str, key: str, compute: Callable[[], T]) -> T:
        self._count(kind, "misses")
        logger.info("cache miss: %s %s", kind, key[:12])
        return compute()

    def _count(self, kind: str, event: str) -> None:
        with self._stats_lock:
            counts = self._stats.setdefault(kind, {"hits": 0, "misses": 0, "corrupt": 0})
            counts[event] += 1


def _check_kind(kind: str) -> None:
    """``kind`` names a folder, so it must be a plain lowercase identifier (no separators, no ``..``)."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"cache kind {kind!r}: use lowercase letters, digits, '_', '-' (it names a folder)")


def _remove_leftovers(path: Path) -> None:
    """Delete temporary files of writers that died mid-write; only called while holding the entry's lock."""
    for leftover in path.parent.glob(f".{path.stem}.*.tmp"):
        logger.warning("removing %s, left by a cache writer that did not finish", leftover)
        leftover.unlink(missing_ok=True)
