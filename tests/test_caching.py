"""The on-disk cache: keys, hits and misses, corruption, atomic writes, and several processes at once.

Reuse is checked by counting ``compute`` calls and the ``stats`` counters, never by timing.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from hft_search.caching import Cache

PARTS = {"model": "minilm", "data": "0123abcd", "fold": 1, "max_length": 64}


class Counter:
    """A compute function that records how often it ran and returns a dict of tensors and plain values."""

    def __init__(self, seed: int = 0) -> None:
        self.calls = 0
        self.seed = seed

    def __call__(self) -> dict:
        self.calls += 1
        generator = torch.Generator().manual_seed(self.seed)
        return {"logits": torch.randn(5, 3, generator=generator), "score": 0.75, "names": ("neg", "pos"),
                "extra": None}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert torch.equal(a["logits"], b["logits"])
    assert (a["score"], a["names"], a["extra"]) == (b["score"], b["names"], b["extra"])


def entry_path(cache: Cache, kind: str = "teacher_logits", parts: dict = PARTS) -> Path:
    return cache.path(kind, Cache.key(kind, parts))


def test_miss_then_hit_computes_once(tmp_path: Path) -> None:
    cache, compute = Cache(tmp_path), Counter()
    first = cache.get_or_compute("teacher_logits", PARTS, compute)
    second = cache.get_or_compute("teacher_logits", PARTS, compute)
    assert compute.calls == 1
    assert_same(first, second)
    assert cache.stats == {"teacher_logits": {"hits": 1, "misses": 1, "corrupt": 0}}
    path = entry_path(cache)
    assert path.is_file()
    assert path.parent.name == path.stem[:2] and path.parent.parent.name == "teacher_logits"


def test_another_cache_object_on_the_same_root_reads_the_entry(tmp_path: Path) -> None:
    expected = Cache(tmp_path).get_or_compute("teacher_logits", PARTS, Counter())
    compute = Counter(seed=99)  # would give other numbers if it ran
    assert_same(Cache(tmp_path).get_or_compute("teacher_logits", PARTS, compute), expected)
    assert compute.calls == 0


def test_hits_and_misses_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(tmp_path)
    with caplog.at_level(logging.INFO, logger="hft_search.caching"):
        for _ in range(3):
            cache.get_or_compute("importance", PARTS, Counter())
    messages = [record.getMessage() for record in caplog.records]
    key = Cache.key("importance", PARTS)[:12]
    assert messages.count(f"cache miss: importance {key}") == 1
    assert messages.count(f"cache hit: importance {key}") == 2


@pytest.mark.parametrize("change", [{"fold": 2}, {"model": "other"}, {"max_length": 128}, {"new": None}])
def test_different_parts_give_different_keys(change: dict) -> None:
    assert Cache.key("tokenized", PARTS) != Cache.key("tokenized", {**PARTS, **change})


def test_different_kinds_give_different_keys_and_entries(tmp_path: Path) -> None:
    assert Cache.key("tokenized", PARTS) != Cache.key("importance", PARTS)
    cache = Cache(tmp_path)
    cache.get_or_compute("tokenized", PARTS, Counter(seed=1))
    compute = Counter(seed=2)
    cache.get_or_compute("importance", PARTS, compute)
    assert compute.calls == 1


class Score(enum.Enum):
    FISHER = "fisher"


def test_key_is_stable_across_ordering_and_equivalent_types(monkeypatch: pytest.MonkeyPatch) -> None:
    import hft_search.caching as caching

    # the code's versions are part of every key (an upgrade recomputes); fixed here to pin the derivation
    monkeypatch.setattr(caching, "code_versions", lambda: {"hft_search": "0.1.0", "torch": "2", "transformers": "5"})
    parts = {"a": 1, "b": {"x": [1, 2], "y": "z"}, "path": Path("models/teacher"), "score": Score.FISHER,
             "q": np.float64(0.5), "layers": (0, 1), "targets": {"query", "value"}, "dtype": torch.float32}
    shuffled = {"targets": {"value", "query"}, "layers": [0, 1], "dtype": torch.float32, "q": 0.5,
                "score": "fisher", "path": "models/teacher", "b": {"y": "z", "x": [1, 2]}, "a": 1}
    assert Cache.key("importance", parts) == Cache.key("importance", shuffled)
    # a fixed value: the key must not depend on the process (hash seed, dict order, memory addresses);
    # it changes only with FORMAT_VERSION or the key derivation, which must then be a deliberate edit here
    assert Cache.key("tokenized", {"model": "minilm", "fold": 0}) == (
        "abee442cc14e23c67c74425ea5507d63041dece41e85af978b3f880f58480a8a")


def test_key_rejects_values_without_a_stable_form() -> None:
    with pytest.raises(TypeError, match=r"parts\['teacher'\]\['model'\] is a object"):
        Cache.key("teacher_logits", {"teacher": {"model": object()}})


@pytest.mark.parametrize("kind", ["", "../escape", "Teacher", "a/b"])
def test_kind_must_be_a_plain_folder_name(kind: str) -> None:
    with pytest.raises(ValueError, match="cache kind"):
        Cache.key(kind, PARTS)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def flip_payload_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage_header(path: Path) -> None:
    path.write_bytes(b"not a cache entry" + path.read_bytes()[17:])


@pytest.mark.parametrize("corrupt", [truncate, flip_payload_byte, empty, garbage_header])
def test_corrupt_entry_is_detected_deleted_and_recomputed(tmp_path: Path, corrupt: Callable[[Path], None],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    expected = Cache(tmp_path).get_or_compute("teacher_logits", PARTS, Counter())
    corrupt(entry_path(Cache(tmp_path)))
    cache, compute = Cache(tmp_path), Counter()
    with caplog.at_level(logging.WARNING, logger="hft_search.caching"):
        value = cache.get_or_compute("teacher_logits", PARTS, compute)
    assert compute.calls == 1
    assert_same(value, expected)
    assert cache.stats["teacher_logits"] == {"hits": 0, "misses": 1, "corrupt": 1}
    assert any("corrupt" in record.getMessage() for record in caplog.records)
    # the rewritten entry is sound again
    again = Cache(tmp_path)
    assert_same(again.get_or_compute("teacher_logits", PARTS, Counter(seed=5)), expected)
    assert again.stats["teacher_logits"]["hits"] == 1


def test_disabled_cache_always_computes(tmp_path: Path) -> None:
    cache, compute = Cache(None), Counter()
    for _ in range(3):
        cache.get_or_compute("importance", PARTS, compute)
    assert compute.calls == 3
    assert not cache.enabled
    assert cache.stats == {"importance": {"hits": 0, "misses": 3, "corrupt": 0}}


def test_values_that_weights_only_loading_refuses_are_rejected_unwritten(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(TypeError, match=r"\['scores'\] is a numpy.ndarray"):
        cache.get_or_compute("importance", PARTS, lambda: {"scores": np.zeros(3)})
    assert not entry_path(cache, "importance").exists()


def test_failing_compute_stores_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def fail() -> dict:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        cache.get_or_compute("teacher_logits", PARTS, fail)
    compute = Counter()
    cache.get_or_compute("teacher_logits", PARTS, compute)
    assert compute.calls == 1


def test_leftover_temp_file_of_a_crashed_writer_is_harmless(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    path = entry_path(cache)
    path.parent.mkdir(parents=True)
    leftover = path.parent / f".{path.stem}.x1y2z3.tmp"
    leftover.write_bytes(b"half a payload")
    compute = Counter()
    cache.get_or_compute("teacher_logits", PARTS, compute)
    cache.get_or_compute("teacher_logits", PARTS, compute)
    assert compute.calls == 1
    assert not leftover.exists()  # removed by the next writer, which holds the lock


def test_leftover_temp_file_next_to_a_complete_entry_does_not_hide_it(tmp_path: Path) -> None:
    expected = Cache(tmp_path).get_or_compute("teacher_logits", PARTS, Counter())
    path = entry_path(Cache(tmp_path))
    (path.parent / f".{path.stem}.abc.tmp").write_bytes(b"")
    cache = Cache(tmp_path)
    assert_same(cache.get_or_compute("teacher_logits", PARTS, Counter(seed=3)), expected)
    assert cache.stats["teacher_logits"]["hits"] == 1


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    lock = entry_path(cache).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with lock.open("a+b") as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the lock really is held
    holder.kill()
    holder.wait()
    holder.stdout.close()
    with lock.open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel: no BlockingIOError
        fcntl.flock(handle, fcntl.LOCK_UN)
    compute = Counter()
    cache.get_or_compute("teacher_logits", PARTS, compute)
    assert compute.calls == 1


def slow_logged_compute(log: str) -> dict:
    """Counts its runs by appending to a file (the only count that adds up across processes)."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("computed\n")
    time.sleep(0.5)  # long enough that the other process asks while this one computes
    return {"logits": torch.arange(6.0).reshape(2, 3), "score": 0.5}


def ask_in_another_process(root: str, log: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing proxies
    cache = Cache(root)
    barrier.wait()
    value = cache.get_or_compute("teacher_logits", PARTS, lambda: slow_logged_compute(log))
    results.put((cache.stats["teacher_logits"], value["logits"].tolist()))


def test_two_processes_compute_a_shared_entry_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    log = tmp_path / "computations.log"
    args = (str(tmp_path / "cache"), str(log), barrier, results)
    workers = [context.Process(target=ask_in_another_process, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert log.read_text(encoding="utf-8").splitlines() == ["computed"]
    assert sorted((stats["hits"], stats["misses"]) for stats, _ in outcomes) == [(0, 1), (1, 0)]
    assert outcomes[0][1] == outcomes[1][1] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
