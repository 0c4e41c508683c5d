"""The benchmark suite runs end to end and writes results of the documented shape.

Speed is measured by the benchmarks, never asserted here: the suite runs at its ``smoke`` sizes on the tiny
model, into a temporary results folder (never over the committed results), and only the JSON's keys and
types and the README table are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE_MODULES = ("memory", "trial_overhead", "caching", "scaling", "search_quality", "threads", "connections",
                 "decoder", "distill_ablation", "setfit_arm")
"""Benchmarks whose JSON the runner writes (``engine`` and ``storage`` write their own)."""
MACHINE_KEYS = {"cpu_count": int, "torch_threads": int, "torch": str, "transformers": str, "optuna": str,
                "peft": str, "device": str, "device_name": str}


def check_target(target: dict) -> None:
    assert isinstance(target["name"], str) and target["name"]
    assert target["value"] is None or isinstance(target["value"], int | float)
    assert isinstance(target["target"], int | float)
    assert target["comparison"] in ("<=", ">=")
    assert isinstance(target["met"], bool)
    assert isinstance(target["detail"], str)


def check_entry(name: str, entry: dict) -> None:
    assert entry["benchmark"] == name and entry["preset"] == "smoke"
    for key, kind in MACHINE_KEYS.items():
        assert isinstance(entry["machine"][key], kind), (name, key)
    assert isinstance(entry["sizes"], dict) and entry["sizes"]
    assert isinstance(entry["duration_s"], float) and entry["duration_s"] > 0
    assert isinstance(entry["data"]["train"], str) and isinstance(entry["data"]["dev"], str)
    assert isinstance(entry["targets"], list)
    if name in ("scaling", "connections") and "skipped" in entry:  # no PostgreSQL: the reason is recorded instead
        assert not os.environ.get("HFT_TEST_POSTGRES_URL"), f"{name} skipped: {entry['skipped']}"
        assert isinstance(entry["skipped"], str)
        return
    assert entry["targets"], name
    for target in entry["targets"]:
        check_target(target)


@pytest.mark.slow
def test_suite_runs_and_writes_results_of_the_documented_shape(tiny_model_dir: Path, tiny_csv: Path,
                                                                tiny_test_csv: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks", "--sizes", "smoke", "--model", str(tiny_model_dir),
               "--train", str(tiny_csv), "--dev", str(tiny_test_csv), "--results-dir", str(results),
               "--threads", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    for name in SUITE_MODULES:
        check_entry(name, json.loads((results / f"{name}.json").read_text())["smoke"])
    overhead = json.loads((results / "trial_overhead.json").read_text())["smoke"]
    assert overhead["gpu"] == {"skipped": "no CUDA device"} or overhead["gpu"]["targets"]
    assert set(overhead["cpu"]["trial_seconds"]) == {"hft_search", "bare", "trainer"}
    decoder = json.loads((results / "decoder.json").read_text())["smoke"]
    assert decoder["gpu"] == {"skipped": "no CUDA"} or decoder["gpu"]["targets"]
    assert {row["model"] for row in decoder["cpu"]["rows"]} == {"qwen2", "bert"}
    assert all(row["trials_per_hour"] > 0 and row["peak_memory_mb"] > 0 for row in decoder["cpu"]["rows"])

    engine = json.loads((results / "engine.json").read_text())
    quick = [entry for key, entry in engine.items() if key.endswith(":quick")]
    assert quick and all(entry["targets"] for entry in quick)
    for target in quick[0]["targets"]:
        check_target(target)
    storage = json.loads((results / "storage.json").read_text())
    assert isinstance(storage["quick"]["worst_percent"], float)

    table = (results / "README_table.md").read_text()
    assert "| benchmark | figure | measured | target | met |" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]
    skipped = {name for name in ("scaling", "connections")
               if "skipped" in json.loads((results / f"{name}.json").read_text())["smoke"]}
    assert {row.split(" | ")[0].removeprefix("| ") for row in rows} >= {*SUITE_MODULES, "engine", "storage"} - skipped


def points(*pairs: tuple[float, float]) -> list[dict]:
    """An anytime curve from (elapsed seconds, best so far) pairs."""
    return [{"elapsed_s": seconds, "best_so_far": best} for seconds, best in pairs]


def test_time_to_reach_another_searchs_final_best_is_a_share_of_its_wall_time() -> None:
    from benchmarks import _anytime as anytime

    theirs = points((10.0, 0.70), (40.0, 0.80))
    assert anytime.share_to_reach(points((5.0, 0.75), (10.0, 0.81)), theirs) == 0.25
    assert anytime.share_to_reach(points((5.0, 0.75), (60.0, 0.79)), theirs) is None  # never reached
    assert anytime.median([0.2, None, 0.4]) == 0.4  # a miss counts as worse than any share
    assert anytime.median([None, None, 0.1]) is None
    assert anytime.median([0.1, 0.3]) == 0.2
