"""Scaling: trials per hour with 1, 2 and 4 workers on one PostgreSQL study.

Each worker is a separate process running the ``hft-search worker`` command (``hft_search.cli``, what the
console script runs) on the same spec and storage, as on a cluster. Every trial does the same work (a fixed
full fine-tune of the model on the same folds), so trials per hour compare the worker counts directly.
Measured per worker count, from the trials' own timestamps:

* trials per hour while the workers run trials (first trial start to last trial end);
* the same including the workers' start-up (imports, model loading), from launching the processes;
* that the workers together finished exactly ``n_trials`` counted trials.

Each worker gets ``cores // workers`` torch threads (at least one), as one would deploy them: more threads
than cores in total makes every process wait on the others. This machine may have fewer cores than workers;
the JSON records the core count, and the figures then measure contention, honestly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from benchmarks._common import Context, bench_spec, check, span_s
from hft_search.storage import delete_study_if_exists, make_storage, mask_url
from hft_search.workers import counts

WORKER_COMMAND = [sys.executable, "-m", "hft_search.cli", "worker"]


@dataclass(frozen=True)
class Sizes:
    rows: int
    folds: int
    max_length: int
    batch_size: int
    n_trials: int
    workers: tuple[int, ...]


SIZES = {
    "full": Sizes(rows=128, folds=2, max_length=32, batch_size=16, n_trials=12, workers=(1, 2, 4)),
    "quick": Sizes(rows=64, folds=2, max_length=32, batch_size=16, n_trials=4, workers=(1, 2, 4)),
    "smoke": Sizes(rows=48, folds=2, max_length=16, batch_size=16, n_trials=2, workers=(1, 2)),
}


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    reason = _unreachable(ctx.postgres)
    if reason is not None:
        print(f"  scaling: skipped ({reason})")
        return {"sizes": sizes, "skipped": reason, "targets": []}
    folder = ctx.folder("scaling")
    spec = bench_spec(ctx, "scaling", folder, rows=sizes.rows, max_length=sizes.max_length, folds=sizes.folds,
                      fixed={"training.epochs": 1, "training.batch_size": sizes.batch_size},
                      study={"n_trials": sizes.n_trials})
    spec_file = folder / "scaling.yaml"
    spec_file.write_text(spec.to_yaml(), encoding="utf-8")
    cores = os.cpu_count() or 1
    print(f"scaling: {sizes.n_trials} trials of {sizes.folds} folds x {sizes.rows} rows per study, workers "
          f"{list(sizes.workers)} on {cores} cores, PostgreSQL {mask_url(ctx.postgres)}", flush=True)
    rows = []
    for workers in sizes.workers:
        row = run_workers(ctx.postgres, spec_file, folder, workers, sizes.n_trials, max(1, cores // workers))
        rows.append(row)
        print(f"  {workers} worker(s), {row['threads_per_worker']} thread(s) each: "
              f"{row['trials_per_hour']:.0f} trials/h ({row['trials_per_hour_with_startup']:.0f} with start-up), "
              f"{row['counted']} trials counted", flush=True)
    one = rows[0]["trials_per_hour"]
    for row in rows:
        row["speedup_vs_1_worker"] = row["trials_per_hour"] / one
    two = next((row for row in rows if row["workers"] == 2), None)
    worst_miss = max(abs(r["counted"] - sizes.n_trials) for r in rows)
    targets = [check("trials counted off n_trials (absolute), worst worker count", worst_miss, 0,
                     detail=f"n_trials {sizes.n_trials}; counted " + ", ".join(f"{r['workers']}w: {r['counted']}"
                                                                                for r in rows))]
    if two is not None:
        targets.append(check("trials per hour, 2 workers / 1 worker", two["speedup_vs_1_worker"], 1.0,
                             at_most=False, detail=f"{cores} cores; "
                             + ", ".join(f"{r['workers']}w {r['trials_per_hour']:.0f}/h" for r in rows)))
    return {"sizes": sizes, "cores": cores, "storage": mask_url(ctx.postgres), "rows": rows, "targets": targets}


def _unreachable(url: str | None) -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    if not url:
        return "no PostgreSQL URL (--postgres none)"
    try:
        storage = make_storage(url)
        optuna.get_all_study_summaries(storage)
        storage.engine.dispose()
    except Exception as error:  # any driver or connection error means: skip, saying why
        return f"PostgreSQL unreachable at {mask_url(url)}: {str(error).splitlines()[0][:200]}"
    return None


def run_workers(url: str, spec_file: Path, folder: Path, workers: int, n_trials: int,
                threads: int) -> dict[str, Any]:
    """Start ``workers`` worker processes on a new study, wait for all, and read the study back."""
    name = f"bench-scaling-{uuid.uuid4().hex[:10]}-{workers}w"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    logs = [folder / f"{name}-{i}.log" for i in range(workers)]
    command = [*WORKER_COMMAND, str(spec_file), "--storage", url, "--study-name", name, "--no-progress"]
    processes = []
    start = time.perf_counter()
    try:
        for log in logs:
            with log.open("w") as handle:
                processes.append(subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT))
        codes = [process.wait(timeout=3600) for process in processes]
        wall = time.perf_counter() - start
        if codes != [0] * workers:
            tail = logs[next(i for i, code in enumerate(codes) if code)].read_text()[-2000:]
            raise RuntimeError(f"workers exited with {codes}; log of the first that failed:\n{tail}")
        trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        delete_study_if_exists(name, url)
    done = [t for t in trials if t.datetime_complete is not None and counts(t)]
    span = span_s(done)
    return {"workers": workers, "threads_per_worker": threads, "n_trials": n_trials,
            "counted": sum(counts(t) for t in trials), "started": len(trials), "span_s": span, "wall_s": wall,
            "trials_per_hour": 3600 * len(done) / span, "trials_per_hour_with_startup": 3600 * len(done) / wall}
