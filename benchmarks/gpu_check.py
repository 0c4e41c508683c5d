"""One GPU check of every CUDA path of the service, in under 8 minutes on one GPU: ``bash benchmarks/gpu_check.sh``.

Steps (each timed, each with a verdict, all in one JSON, default ``benchmarks/results/gpu_check.json``):

1. ``quickstart``: ``studies/quickstart.yaml`` on ``device: cuda`` (bf16 autocast), every trial on the GPU.
2. ``oom``: a trial whose first fold asks for more memory than the GPU has (injected), then normal trials:
   the trial ends FAIL with ``failure_kind: oom``, the worker goes on (out of memory is not a bug: no fail-fast),
   and allocated memory is back to its baseline.
3. ``memory_flat``: 20 small trials; memory allocated after each stays flat.
4. ``packing``: ``hft-search launch --workers K --gpus-per-worker 1/K`` for K = 1, 2, 4 on the same study
   size: MiniLM CV trials per hour with K trials packed on the GPU.
5. ``trial_overhead``: ``python -m benchmarks trial_overhead --quick``, whose GPU part compares a trial with
   the bare fine-tuning loop in bf16.

Without CUDA it stops at once with exit status 2 and says so. Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from benchmarks._common import RESULTS_DIR, ROOT, machine_info, span_s, write_json
from hft_search.objective import CVObjective
from hft_search.spec import StudySpec, load_spec, spec_from_dict
from hft_search.study import default_cache, open_study
from hft_search.workers import counts, optimize

QUICKSTART = ROOT / "studies" / "quickstart.yaml"
MEMORY_TOLERANCE_MB = 16.0
"""Allocated memory a trial may leave behind (allocator rounding, cached kernels' workspaces)."""
PACKING = (1, 2, 4)


def quickstart_spec(folder: Path, **changes: Any) -> StudySpec:
    """The quickstart on the GPU, its study and cache in ``folder``; ``changes`` replace top-level sections."""
    raw = yaml.safe_load(load_spec(QUICKSTART).to_yaml())
    raw.update(device="cuda", cache_dir=str(folder / "cache"),
               study={**raw["study"], "storage": f"sqlite:///{folder / 'gpu_check.db'}"})
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return spec_from_dict(raw)


def allocated_mb() -> float:
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated() / 2**20


def check_quickstart(folder: Path) -> dict[str, Any]:
    spec = quickstart_spec(folder)
    objective = CVObjective(spec, cache=default_cache(spec, spec.study.storage))
    study = optimize(open_study(spec, study_name="quickstart-cuda"), objective, spec.study.n_trials)
    trials = study.get_trials(deepcopy=False)
    devices = sorted({str(t.user_attrs.get("device")) for t in trials})
    ok = sum(counts(t) for t in trials) == spec.study.n_trials and all(d.startswith("cuda") for d in devices)
    return {"ok": ok, "counted": sum(counts(t) for t in trials), "devices": devices,
            "best": study.best_value, "peak_memory_mb": max(t.user_attrs.get("peak_memory_mb", 0) for t in trials)}


class InjectedOOM(CVObjective):
    """The CV objective whose first fold of its first trial asks for more memory than any GPU has."""

    injected = False

    def fit_fold(self, fold: int, config: Any) -> Any:
        if not self.injected:
            self.injected = True
            torch.empty(2**50, dtype=torch.uint8, device="cuda")  # 1 PiB: a real CUDA out-of-memory error
        return super().fit_fold(fold, config)


def check_oom(folder: Path) -> dict[str, Any]:
    spec = quickstart_spec(folder, study={"n_trials": 3}, data={"max_train_samples": 96})
    objective = InjectedOOM(spec, cache=default_cache(spec, spec.study.storage))
    baseline = allocated_mb()
    after: list[float] = []

    def measured(trial: optuna.Trial) -> Any:
        try:
            return objective(trial)
        finally:
            after.append(allocated_mb())

    study = optimize(open_study(spec, study_name="oom"), measured, 3)
    trials = study.get_trials(deepcopy=False)
    kinds = [t.user_attrs.get("failure_kind", t.state.name) for t in trials]
    ok = kinds == ["oom", "COMPLETE", "COMPLETE"] and max(after) - baseline <= MEMORY_TOLERANCE_MB
    return {"ok": ok, "trials": kinds, "baseline_mb": baseline, "allocated_after_each_mb": after,
            "fail_reason": trials[0].user_attrs.get("fail_reason")}


def check_memory_flat(folder: Path, n_trials: int = 20) -> dict[str, Any]:
    spec = quickstart_spec(folder, study={"n_trials": n_trials, "sampler": "random"},
                           data={"max_train_samples": 96}, cv={"folds": 2}, fixed={"training.epochs": 1})
    objective = CVObjective(spec, cache=default_cache(spec, spec.study.storage))
    after: list[float] = []
    reserved: list[float] = []

    def measured(trial: optuna.Trial) -> Any:
        try:
            return objective(trial)
        finally:
            after.append(allocated_mb())
            reserved.append(torch.cuda.memory_reserved() / 2**20)

    optimize(open_study(spec, study_name="flat"), measured, n_trials)
    growth = max(after[1:]) - after[0]
    return {"ok": growth <= MEMORY_TOLERANCE_MB, "growth_mb": growth, "allocated_after_each_mb": after,
            "reserved_after_each_mb": reserved}


def check_packing(folder: Path) -> dict[str, Any]:
    spec = quickstart_spec(folder, study={"n_trials": 8, "sampler": "random", "pruner": "none"})
    spec_file = folder / "packing.yaml"
    spec_file.write_text(spec.to_yaml(), encoding="utf-8")
    cpus = os.cpu_count() or 1
    rows = {}
    for packed in PACKING:
        name = f"packing-{packed}-{uuid.uuid4().hex[:6]}"
        command = [sys.executable, "-m", "hft_search.cli", "launch", str(spec_file), "--workers", str(packed),
                   "--gpus-per-worker", str(1 / packed), "--cpus-per-worker", str(max(1, cpus // packed)),
                   "--study-name", name]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        study = optuna.load_study(study_name=name, storage=spec.study.storage)
        finished = [t for t in study.get_trials(deepcopy=False) if counts(t) and t.datetime_complete]
        span = span_s(finished)
        rows[f"{packed} per GPU"] = {"exit": done.returncode, "counted": len(finished), "span_s": span,
                                     "trials_per_hour": 3600 * len(finished) / span,
                                     "log_tail": done.stderr[-1500:] if done.returncode else ""}
    one = rows["1 per GPU"]["trials_per_hour"]
    for row in rows.values():
        row["vs_1_per_gpu"] = row["trials_per_hour"] / one
    ok = all(row["exit"] == 0 and row["counted"] == 8 for row in rows.values())
    return {"ok": ok, "device": torch.cuda.get_device_name(), "rows": rows}


def check_trial_overhead(folder: Path) -> dict[str, Any]:
    results = folder / "results"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "trial_overhead", "--quick", "--results-dir",
                           str(results), "--train", str(ROOT / "studies" / "data" / "reviews.csv"), "--dev",
                           str(ROOT / "studies" / "data" / "reviews_test.csv")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    gpu = json.loads((results / "trial_overhead.json").read_text())["quick"]["gpu"] if done.returncode == 0 else {}
    return {"ok": done.returncode == 0 and bool(gpu.get("targets")), "gpu": gpu,
            "log_tail": done.stdout[-1500:] + done.stderr[-1500:] if done.returncode else ""}


CHECKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "quickstart": check_quickstart, "oom": check_oom, "memory_flat": check_memory_flat,
    "packing": check_packing, "trial_overhead": check_trial_overhead,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu_check.json")
    parser.add_argument("checks", nargs="*", metavar="CHECK", help=f"default: all of {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.checks) - set(CHECKS))
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if not torch.cuda.is_available():
        print("error: no CUDA device: this check exercises the GPU paths and needs one GPU "
              "(torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report: dict[str, Any] = {"machine": machine_info("cuda"), "checks": {}}
    with tempfile.TemporaryDirectory(prefix="hft-gpu-check-") as work:
        for name in args.checks or CHECKS:
            start = time.perf_counter()
            folder = Path(work) / name
            folder.mkdir()
            try:
                result = CHECKS[name](folder)
            except Exception as error:  # one broken check must not hide the others
                result = {"ok": False, "error": f"{type(error).__name__}: {error}"[:2000]}
            result["seconds"] = time.perf_counter() - start
            report["checks"][name] = result
            print(f"{name}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']:.0f} s)", flush=True)
            write_json(args.out, report)
    report["ok"] = all(result["ok"] for result in report["checks"].values())
    write_json(args.out, report)
    print(f"wrote {args.out}: {'all checks passed' if report['ok'] else 'some checks FAILED'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
