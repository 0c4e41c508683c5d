"""Benchmark of the study storages under many workers: SQLite, PostgreSQL and an Optuna journal file.

For 1, 2, 4 and 8 worker processes on each storage, the workers run the real worker loop
(:func:`hft_search.workers.optimize`: place check, heartbeats, stale-trial sweeps) with a near-zero-cost
objective that writes to the storage what a 3-fold CV trial writes (``tests/cheap_worker.py``). They start
together (after their imports) and finish the study's trials together. Measured per configuration:

* storage operations per second: calls of Optuna's storage API, all workers and heartbeat threads together;
* trials per second;
* storage time per trial: time the workers' main threads spend in storage calls, per trial; this is what
  the storage adds to every trial (heartbeats run beside the trial and are not in it);
* worker time per trial: worker-seconds per trial, i.e. storage, Optuna and the worker loop (the objective
  itself costs nothing).

Ratios are to 1 worker on the same storage and to SQLite with as many workers. The storage time per trial
is then put against one real MiniLM CV trial of ``studies/quickstart.yaml`` (target: below 1 %).

Few cores (2 on the machine this was written on) make 8 workers a measure of contention: the JSON records
the core count next to the numbers.

    python -m benchmarks.storage                        # 64 trials per configuration, one quickstart trial
    python -m benchmarks.storage --quick                # 16 trials, a 2-fold 1-epoch MiniLM trial on 96 rows
    python -m benchmarks.storage --minilm-trial-s 240   # take the MiniLM trial time from a previous run
    python -m benchmarks.storage --minilm-data /work/shared/datasets/sst2/train.tsv  # another training file

PostgreSQL is ``--postgres URL``, by default ``$HFT_TEST_POSTGRES_URL``; without either it is skipped (and the
JSON says so). Results print as a table and merge into ``benchmarks/results/storage.json`` (key ``full`` or
``quick``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import optuna  # noqa: E402 - after the offline switch
import yaml  # noqa: E402
from optuna.storages import BaseStorage, JournalStorage  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "storage.json"
"""Not imported from ``benchmarks._common``, which imports torch and transformers: a light worker must not pay
for them (64 of them on 2 cores would spend minutes and gigabytes importing what they never use)."""

sys.path.insert(0, str(ROOT / "tests"))
from cheap_worker import CheapObjective, cheap_spec  # noqa: E402

from hft_search._optuna_compat import STALE_TRIAL_IDS_METHOD, CachedStorage  # noqa: E402
from hft_search.storage import delete_study_if_exists, make_storage  # noqa: E402
from hft_search.study import open_study  # noqa: E402
from hft_search.workers import counts, optimize  # noqa: E402

QUICKSTART = ROOT / "studies" / "quickstart.yaml"
WORKER_COUNTS = (1, 2, 4, 8)
TARGET_PERCENT = 1.0
HEARTBEAT_S = 60
"""The spec's default: what a real study runs with."""

OPERATIONS = sorted(
    name for name, value in vars(BaseStorage).items()
    if callable(value) and not name.startswith("_") and name != "remove_session"
) + ["record_heartbeat", STALE_TRIAL_IDS_METHOD]
"""Storage API calls that reach the database or the journal file."""

BACKGROUND = " (heartbeat thread)"


# -- in every worker process: count and time the storage calls -----------------------------------------


class StorageMeter:
    """Counts calls of :data:`OPERATIONS` and their time, separately for the main thread and the others.

    Installed on the outermost storage classes a study talks to (Optuna's cache in front of RDB storages, and
    the journal storage); nested calls count once, in the outermost.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._depth = threading.local()

    def install(self, *classes: type) -> None:
        for cls in classes:
            for name in OPERATIONS:
                if name in vars(cls):
                    setattr(cls, name, self._metered(name, vars(cls)[name]))

    def _metered(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def metered(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "value", 0)
            self._depth.value = depth + 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth.value = depth
                if depth == 0:
                    main = threading.current_thread() is threading.main_thread()
                    key = name if main else name + BACKGROUND
                    self.calls[key] += 1
                    self.seconds[key] += time.perf_counter() - start

        return metered

    def report(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "seconds": dict(self.seconds)}


def worker_main(argv: Sequence[str]) -> int:
    """``storage.py _worker URL STUDY N_TRIALS TRIAL_S GO_FILE STATS_FILE``: one metered worker, started by a
    file, whose trials sleep ``TRIAL_S`` seconds (0: trials cost nothing).

    It opens the study (as ``hft-search worker`` does first) before it reports ready, so that the meter sees
    the trial loop of :func:`hft_search.workers.optimize` only: the per-trial cost, not the one-off start.
    """
    url, name, n_trials, trial_s, go, stats = argv
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = cheap_spec(name, url, int(n_trials), heartbeat=HEARTBEAT_S)
    study = open_study(spec)
    meter = StorageMeter()
    meter.install(CachedStorage, JournalStorage)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    optimize(study, CheapObjective(float(trial_s)), spec.study.n_trials, max_retries=spec.study.max_retries)
    Path(stats).write_text(json.dumps(meter.report()))
    return 0


# -- the benchmark process -------------------------------------------------------------------------------


def storage_urls(folder: Path, postgres: str | None) -> dict[str, str]:
    urls = {"sqlite": f"sqlite:///{folder}/bench.db"}
    if postgres:
        urls["postgresql"] = postgres
    urls["journal"] = f"journal:{folder}/bench.journal"
    return urls


def run_configuration(url: str, workers: int, n_trials: int, folder: Path, trial_s: float = 0.0) -> dict[str, Any]:
    """Start ``workers`` metered workers on a new study, release them together, and sum up what they did.
    Their trials sleep ``trial_s`` seconds in place of fine-tuning (0: the storage is all they do)."""
    name = f"bench-{uuid.uuid4().hex[:10]}"
    go = folder / f"{name}.go"
    stats = [folder / f"{name}.{i}.json" for i in range(workers)]
    command = [sys.executable, "-m", "benchmarks.storage", "_worker", url, name, str(n_trials), str(trial_s),
               str(go)]
    processes = [subprocess.Popen([*command, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for path in stats]
    try:
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a worker did not start: exit status {process.wait()}")
        go.touch()
        codes = [process.wait(timeout=900) for process in processes]
    finally:
        for process in processes:
            process.kill()
    if codes != [0] * workers:
        raise RuntimeError(f"workers exited with {codes}")
    trials = study_trials(url, name)
    return summarize(trials, [json.loads(path.read_text()) for path in stats], workers, n_trials)


def study_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = make_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        delete_study_if_exists(name, storage)
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()


def summarize(trials: list[optuna.trial.FrozenTrial], reports: list[dict], workers: int,
              n_trials: int) -> dict[str, Any]:
    counted = sum(counts(t) for t in trials)
    if counted != n_trials or any(t.state == TrialState.RUNNING for t in trials):
        raise RuntimeError(f"{counted} trials counted instead of {n_trials}: the worker loop is broken")
    from benchmarks._common import span_s

    left = sum(t.state == TrialState.WAITING for t in trials)  # re-queued copies the study no longer needed
    ran = [t for t in trials if t.datetime_complete is not None]
    span = span_s(ran)
    calls: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for report in reports:
        calls.update(report["calls"])
        seconds.update(report["seconds"])
    foreground = sum(s for key, s in seconds.items() if not key.endswith(BACKGROUND))
    top = sorted(seconds, key=seconds.__getitem__, reverse=True)[:5]
    return {
        "workers": workers, "trials": n_trials, "trials_started": len(ran),
        "surplus_trials": len(ran) - n_trials, "left_waiting": left, "span_s": round(span, 3),
        "trials_per_s": n_trials / span, "storage_ops": sum(calls.values()),
        "storage_ops_per_s": sum(calls.values()) / span,
        "storage_ops_per_trial": sum(calls.values()) / n_trials,
        "storage_ms_per_trial": 1000 * foreground / n_trials,
        "worker_ms_per_trial": 1000 * workers * span / n_trials,
        "slowest_operations": {key: {"calls": calls[key], "ms": round(1000 * seconds[key], 1)} for key in top},
    }


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Scaling (to 1 worker on the same storage) and storage against storage (to SQLite, same workers)."""
    first = {row["storage"]: row for row in rows if row["workers"] == 1}
    sqlite = {row["workers"]: row for row in rows if row["storage"] == "sqlite"}
    for row in rows:
        row["trials_per_s_vs_1_worker"] = row["trials_per_s"] / first[row["storage"]]["trials_per_s"]
        row["storage_ms_vs_sqlite"] = row["storage_ms_per_trial"] / sqlite[row["workers"]]["storage_ms_per_trial"]


def minilm_trial(quick: bool, folder: Path, data: Path | None) -> dict[str, Any]:
    """Time one real CV trial on the packaged MiniLM (the quickstart spec, on ``data`` when given; smaller with
    ``--quick``), with the storage calls it makes metered as in the workers."""
    from benchmarks._common import study_without_extras, trial_seconds
    from hft_search.objective import CVObjective
    from hft_search.spec import spec_from_dict
    from hft_search.study import default_cache

    raw = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    if data is not None:  # another dataset: the demo test split's labels need not be its labels
        raw["data"].update(train=str(data.resolve()), test=None)
    else:
        raw["data"]["train"] = str(QUICKSTART.parent / raw["data"]["train"])
    if not Path(raw["data"]["train"]).is_file():
        raise SystemExit(f"{raw['data']['train']} is missing: pass --minilm-data FILE or --minilm-trial-s SECONDS")
    raw["name"] = "bench-minilm"
    raw["cache_dir"] = str(folder / "cache")
    extras, _ = study_without_extras()  # one CV trial: no baseline sweep, portfolio or confirmation round
    raw["study"].update(n_trials=1, storage=f"sqlite:///{folder}/minilm.db", **extras)
    if quick:
        raw["data"]["max_train_samples"] = 96
        raw["cv"]["folds"] = 2
        raw["fixed"]["training.epochs"] = 1
    spec = spec_from_dict(raw, base_dir=QUICKSTART.parent)
    objective = CVObjective(spec, cache=default_cache(spec, spec.study.storage))
    study = open_study(spec)
    meter = StorageMeter()
    meter.install(CachedStorage)
    (trial,) = optimize(study, objective, 1).get_trials()
    seconds = trial_seconds(trial)
    in_trial = sum(s for key, s in meter.seconds.items() if not key.endswith(BACKGROUND))
    return {"spec": "studies/quickstart.yaml" + (" (96 rows, 2 folds, 1 epoch)" if quick else ""),
            "data": raw["data"]["train"], "rows": raw["data"]["max_train_samples"], "state": trial.state.name,
            "trial_s": seconds, "storage_ms_in_trial": 1000 * in_trial,
            "storage_percent_of_trial": 100 * in_trial / seconds}


def postgres_version(url: str) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


def machine(postgres: str | None, worker_counts: Sequence[int]) -> dict[str, Any]:
    from benchmarks._common import machine_info, package_version

    info = machine_info()  # cores, load average at the start, processor (device_name), package versions
    cores = info["cpu_count"]
    return {
        **info, "sqlalchemy": package_version("sqlalchemy"), "psycopg": package_version("psycopg"),
        "sqlite": sqlite3.sqlite_version, "postgresql": postgres_version(postgres) if postgres else None,
        "note": (f"{cores} CPU cores shared by up to {max(worker_counts)} worker processes and the database: "
                 "with more workers than cores the figures measure contention, not the storage alone")
                if cores < max(worker_counts) else "",
    }


def print_table(rows: list[dict[str, Any]], minilm: dict[str, Any]) -> None:
    print(f"\n{'storage':<11}{'workers':>8}{'trials/s':>10}{'x 1 worker':>11}{'ops/s':>9}{'ops/trial':>10}"
          f"{'storage ms/trial':>17}{'x sqlite':>9}{'worker ms/trial':>16}{'% MiniLM trial':>15}")
    for row in rows:
        print(f"{row['storage']:<11}{row['workers']:>8}{row['trials_per_s']:>10.1f}"
              f"{row['trials_per_s_vs_1_worker']:>11.2f}{row['storage_ops_per_s']:>9.0f}"
              f"{row['storage_ops_per_trial']:>10.1f}{row['storage_ms_per_trial']:>17.1f}"
              f"{row['storage_ms_vs_sqlite']:>9.2f}{row['worker_ms_per_trial']:>16.1f}"
              f"{row['percent_of_minilm_trial']:>14.3f}%")
    print(f"MiniLM trial ({minilm['spec']}): {minilm['trial_s']:.1f} s"
          + (f", of which {minilm['storage_ms_in_trial']:.0f} ms ({minilm['storage_percent_of_trial']:.2f} %) "
             "in its own storage calls (1 worker, SQLite)" if "storage_ms_in_trial" in minilm else "")
          + f"; target: storage time per trial < {TARGET_PERCENT:g} % of it")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 trials per configuration, a small MiniLM trial")
    parser.add_argument("--postgres", default=os.environ.get("HFT_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default: $HFT_TEST_POSTGRES_URL; skipped when unset)")
    parser.add_argument("--minilm-trial-s", type=float, help="seconds of one MiniLM CV trial, instead of timing one")
    parser.add_argument("--minilm-data", type=Path, help="training file (text, label columns) for the MiniLM "
                        "trial instead of the quickstart's")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS),
                        help="worker counts to run (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file the results merge into")
    args = parser.parse_args(argv)
    n_trials = 16 if args.quick else 64
    info = machine(args.postgres, args.workers)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hft-bench-storage-") as tmp:
        folder = Path(tmp)
        minilm = ({"spec": "given (--minilm-trial-s)", "trial_s": args.minilm_trial_s} if args.minilm_trial_s
                  else minilm_trial(args.quick, folder, args.minilm_data))
        print(f"MiniLM trial: {minilm['trial_s']:.1f} s", flush=True)
        for backend, url in storage_urls(folder, args.postgres).items():
            for workers in args.workers:
                row = {"storage": backend, **run_configuration(url, workers, n_trials, folder)}
                print(f"{backend} x {workers}: {row['trials_per_s']:.1f} trials/s, "
                      f"{row['storage_ms_per_trial']:.1f} ms storage per trial", flush=True)
                rows.append(row)
    add_ratios(rows)
    for row in rows:
        row["percent_of_minilm_trial"] = 100 * row["storage_ms_per_trial"] / 1000 / minilm["trial_s"]
    print_table(rows, minilm)
    over = [f"{row['storage']} x {row['workers']}" for row in rows if row["percent_of_minilm_trial"] >= TARGET_PERCENT]
    if over:
        print(f"over {TARGET_PERCENT:g} %: {', '.join(over)} (near-zero-cost trials from every worker at once)")
    from benchmarks._common import merge_json

    merge_json(args.out, {"quick" if args.quick else "full": {
        "machine": info, "trials_per_configuration": n_trials, "heartbeat_interval_s": HEARTBEAT_S,
        "postgresql": "measured" if args.postgres else "skipped: no --postgres and no $HFT_TEST_POSTGRES_URL",
        "minilm_trial": minilm, "target_percent": TARGET_PERCENT,
        "worst_percent": max(row["percent_of_minilm_trial"] for row in rows), "over_target": over,
        "results": rows,
    }})
    print(f"written to {args.out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    main()
