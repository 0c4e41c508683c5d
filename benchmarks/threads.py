"""Threads: workers that share a machine, with and without splitting its cores between them.

torch starts as many threads as the machine has cores, in every process. Two workers on 2 cores then run
four busy threads that keep preempting each other (the quickstart took about 7 minutes with two such workers
against 2.5 with one). The same quickstart-sized study (fixed work per trial: only the learning rate is
searched, so every trial costs the same) runs six ways, each on its own study:

* ``1 worker``: ``hft-search worker``, torch's default threads (all cores);
* ``2 workers, no split`` (before): two ``hft-search worker`` processes, each with all cores' threads;
* ``2 workers, --threads``: two ``hft-search worker --threads cores/2`` (the split by hand);
* ``launch --workers 2``: ``hft-search launch`` on a local Ray instance, which gives each worker its share;
* ``4 workers, --threads`` (``cores/4``, at least 1) and ``4 workers, no split``: more workers than cores.

Target (issue 22): every configuration that splits the threads runs at least as many trials per hour as one
worker alone (>= 1.0x), and splitting never loses to not splitting.

Trials per hour come from the trials' own timestamps (first start to last end), so start-up (and Ray's) is
left out; the wall time with start-up is recorded too.

    python -m benchmarks threads        # 8 trials x 3 folds x 480 rows, x6: over 1.5 h on 2 idle cores (the
                                        # unsplit workers are several times slower); --work-dir resumes
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from benchmarks._common import Context, FoldSizes, bench_spec, check, span_s, spec_yaml, study_without_extras
from hft_search.workers import counts

CLI = [sys.executable, "-m", "hft_search.cli"]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Set by a caller (the suite's test sets them to 1), they would split the threads for every configuration."""


@dataclass(frozen=True)
class Sizes(FoldSizes):
    n_trials: int


SIZES = {
    "full": Sizes(rows=480, folds=3, max_length=48, epochs=2, n_trials=8),
    "quick": Sizes(rows=160, folds=2, max_length=48, epochs=1, n_trials=4),
    "smoke": Sizes(rows=48, folds=2, max_length=16, epochs=1, n_trials=2),
}


SPLITS = {"2 workers, --threads": "2 workers, no split", "launch --workers 2": "2 workers, no split",
          "4 workers, --threads": "4 workers, no split"}
"""Each configuration that splits the threads → the configuration with as many workers that does not."""


def configurations(cores: int) -> dict[str, tuple[list[list[str]], int]]:
    """Name → (the commands to start together, the threads each worker is meant to run), the oversubscribed
    ``4 workers, no split`` last: it takes longer than all the others together on 2 cores."""
    half, quarter = max(1, cores // 2), max(1, cores // 4)
    return {
        "1 worker": ([["worker"]], cores),
        "2 workers, no split": ([["worker"]] * 2, cores),
        "2 workers, --threads": ([["worker", "--threads", str(half)]] * 2, half),
        "launch --workers 2": ([["launch", "--workers", "2"]], half),
        "4 workers, --threads": ([["worker", "--threads", str(quarter)]] * 4, quarter),
        "4 workers, no split": ([["worker"]] * 4, cores),
    }


def run_configuration(spec_file: Path, url: str, folder: Path, commands: list[list[str]]) -> dict[str, Any]:
    """Start the commands on a new study, wait for all, and read the study back."""
    name = f"bench-threads-{uuid.uuid4().hex[:10]}"
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    processes, logs = [], []
    start = time.perf_counter()
    try:
        for i, command in enumerate(commands):
            log = folder / f"{name}-{i}.log"
            logs.append(log)
            argv = [*CLI, command[0], str(spec_file), *command[1:], "--storage", url, "--study-name", name]
            with log.open("w") as handle:
                processes.append(subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT))
        codes = [process.wait(timeout=7200) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    wall = time.perf_counter() - start
    if any(codes):
        failed = next(i for i, code in enumerate(codes) if code)
        raise RuntimeError(f"exit codes {codes}; log of the first that failed:\n{logs[failed].read_text()[-2000:]}")
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    done = [t for t in trials if counts(t) and t.datetime_complete is not None]
    span = span_s(done)
    return {"counted": len(done), "span_s": span, "wall_s": wall, "trials_per_hour": 3600 * len(done) / span,
            "trials_per_hour_with_startup": 3600 * len(done) / wall}


ROWS_FILE = "rows.json"
"""The configurations measured so far, in the benchmark's folder: a run resumed in a kept work folder
(``--work-dir``) measures only the rest (oversubscribed configurations take the better part of an hour)."""


def finished_rows(folder: Path, sizes: Sizes) -> dict[str, dict[str, Any]]:
    """The rows of an earlier run in this folder at the same sizes; none when there is none."""
    path = folder / ROWS_FILE
    if not path.exists():
        return {}
    kept = json.loads(path.read_text())
    return kept["rows"] if kept["sizes"] == asdict(sizes) else {}


def keep_rows(folder: Path, sizes: Sizes, rows: dict[str, dict[str, Any]]) -> None:
    (folder / ROWS_FILE).write_text(json.dumps({"sizes": asdict(sizes), "rows": rows}, indent=1))


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    folder = ctx.folder("threads")
    extras, notes = study_without_extras()  # exactly n_trials of equal cost, no trial of another kind
    spec = bench_spec(ctx, "threads", folder, rows=sizes.rows, max_length=sizes.max_length, folds=sizes.folds,
                      search_space={"training.learning_rate": {"float": [2.0e-5, 3.0e-4], "log": True}},
                      fixed={"training.epochs": sizes.epochs, "training.batch_size": 16},
                      study={"n_trials": sizes.n_trials, "sampler": "random", **extras})
    spec_file = folder / "threads.yaml"
    spec_file.write_text(spec_yaml(spec), encoding="utf-8")
    url = f"sqlite:///{folder / 'threads.db'}"
    cores = os.cpu_count() or 1
    print(f"threads: {sizes.n_trials} trials of {sizes.folds} folds x {sizes.rows} rows, {cores} cores", flush=True)
    rows = finished_rows(folder, sizes)
    for label, (commands, threads) in configurations(cores).items():
        if label in rows:
            print(f"  {label}: measured by the run this one resumes", flush=True)
            continue
        measured_at = datetime.now(timezone.utc).isoformat(timespec="seconds")  # a resumed run's rows differ
        row = {"threads_per_worker": threads, "measured_at": measured_at,
               **run_configuration(spec_file, url, folder, commands)}
        rows[label] = row
        keep_rows(folder, sizes, rows)
        print(f"  {label} ({threads} thread(s) each): {row['trials_per_hour']:.0f} trials/h, "
              f"{row['wall_s']:.0f} s with start-up, {row['counted']} counted", flush=True)
    return summarize(rows, sizes, cores, notes)


def summarize(rows: dict[str, dict[str, Any]], sizes: Sizes, cores: int, notes: list[str]) -> dict[str, Any]:
    """The result and its targets from the rows measured; a configuration without a row (a run stopped before
    it, see :data:`ROWS_FILE`) is named in ``not_measured`` and its targets are not met."""
    per_hour = {label: row["trials_per_hour"] for label, row in rows.items()}

    def ratio(label: str, to: str) -> tuple[float | None, str]:
        if label not in per_hour or to not in per_hour:
            return None, f"not measured: {', '.join(x for x in (label, to) if x not in per_hour)}"
        return per_hour[label] / per_hour[to], f"{per_hour[label]:.0f}/h vs {per_hour[to]:.0f}/h"

    targets = []
    for split, unsplit in SPLITS.items():
        value, detail = ratio(split, "1 worker")
        if value is not None:
            detail += f", {cores} cores, {rows[split]['threads_per_worker']} thread(s) per worker"
        targets.append(check(f"trials/h, {split} / 1 worker", value, 1.0, at_most=False, detail=detail))
        value, detail = ratio(split, unsplit)
        targets.append(check(f"trials/h, {split} / {unsplit}", value, 1.0, at_most=False, detail=detail))
    targets.append(check("trials counted off n_trials (absolute), worst configuration",
                         max(abs(row["counted"] - sizes.n_trials) for row in rows.values()), 0))
    missing = [label for label in configurations(cores) if label not in rows]
    return {"sizes": sizes, "cores": cores, "rows": rows, "switched": notes, "targets": targets,
            "not_measured": missing}
