"""Connections: 16, 32 and 64 light worker processes on one PostgreSQL, directly and through PgBouncer.

PostgreSQL allows about 100 connections (``max_connections``), and every worker holds a small pool and a
heartbeat. Here the light workers of ``benchmarks/storage.py`` (the real worker loop with an objective that
writes what a 3-fold CV trial writes and sleeps in place of the fine-tunes; storage calls metered) run one
study together, once on the server
directly and once through a real PgBouncer in transaction pooling (``tests/pgbouncer.py``, pool of
:data:`~pgbouncer.POOL_SIZE` server connections). Measured per configuration:

* peak server connections to the database (``pg_stat_activity``, sampled every 0.1 s);
* storage time per trial (the workers' main threads in storage calls) and its share of one MiniLM CV trial
  of the quickstart (the figure of ``results/storage.json``, else :data:`MINILM_TRIAL_S`);
* trials per second, and whether the workers finished exactly ``n_trials`` (a run that fails, e.g. with
  "too many clients", is recorded with its error instead).

Why the trials sleep as long as a MiniLM trial (full sizes): the target is about workers that fine-tune. With
trials that cost nothing, 64 processes on 2 cores are always runnable and always in a storage call, so by
Little's law their storage time per trial is workers / throughput whatever the storage does: the figure would
measure 64 processes queuing for 2 cores, not PostgreSQL or PgBouncer. A sleeping worker holds no core, as a
worker waiting on its GPU; the workers still start their trials together (the burst a study's start makes).
Each worker runs ``trials_per_worker`` trials, so that the figures are those of the trial loop rather than of
one trial between a worker's start and its exit. Zero-cost trials (the storage at full load) are
``benchmarks/storage.py``'s measurement.

    python -m benchmarks connections    # 16/32/64 workers x 3 trials of 32 s (about 12 min on 2 idle cores)
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy

from benchmarks._common import RESULTS_DIR, ROOT, Context, check
from benchmarks.storage import run_configuration

sys.path.insert(0, str(ROOT / "tests"))
from pgbouncer import POOL_SIZE, PeakConnections, running_pgbouncer  # noqa: E402

from hft_search.storage import mask_url  # noqa: E402

MINILM_TRIAL_S = 32.3
"""One quickstart MiniLM CV trial on 2 CPU cores (``results/storage.json``, full), when that file is absent."""


@dataclass(frozen=True)
class Sizes:
    workers: tuple[int, ...]
    trials_per_worker: int  # n_trials = workers x this
    trial_s: float | None  # seconds each light trial sleeps; None: as long as the MiniLM trial


SIZES = {
    "full": Sizes(workers=(16, 32, 64), trials_per_worker=3, trial_s=None),
    "quick": Sizes(workers=(16,), trials_per_worker=2, trial_s=2.0),
    "smoke": Sizes(workers=(4,), trials_per_worker=2, trial_s=0.5),
}


def minilm_trial_s() -> tuple[float, str]:
    """The MiniLM trial time that the storage benchmark measured, and where it comes from."""
    path = RESULTS_DIR / "storage.json"
    try:
        return float(json.loads(path.read_text())["full"]["minilm_trial"]["trial_s"]), "results/storage.json"
    except (OSError, KeyError, ValueError):
        return MINILM_TRIAL_S, "constant (results/storage.json absent)"


def measure(url: str, server_url: str, workers: int, n_trials: int, folder: Path, sleep: float) -> dict[str, Any]:
    """One configuration, with the server's connections sampled meanwhile; an error is recorded, not raised."""
    with PeakConnections(server_url) as connections:
        try:
            row = run_configuration(url, workers, n_trials, folder, sleep)
        except RuntimeError as error:
            row = {"workers": workers, "error": mask_url(str(error))[:300]}
    return {**row, "peak_server_connections": connections.peak, "exact": "error" not in row}


def unavailable(postgres: str | None) -> str | None:
    """Why the benchmark cannot run here (no PostgreSQL, no PgBouncer), or None."""
    if not postgres:
        return "no PostgreSQL URL (--postgres none)"
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        return "pgbouncer is not installed (apt-get install -y pgbouncer)"
    engine = sqlalchemy.create_engine(postgres, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            return None
    except sqlalchemy.exc.SQLAlchemyError as error:
        cause = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        return f"PostgreSQL unreachable at {mask_url(postgres)}: {cause}"
    finally:
        engine.dispose()


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    reason = unavailable(ctx.postgres)
    if reason is not None:
        print(f"  connections: skipped ({reason})")
        return {"sizes": sizes, "skipped": reason, "targets": []}
    folder = ctx.folder("connections")
    trial_s, source = minilm_trial_s()
    sleep = trial_s if sizes.trial_s is None else sizes.trial_s
    print(f"connections: {', '.join(map(str, sizes.workers))} workers x {sizes.trials_per_worker} trials of "
          f"{sleep:.1f} s (sleeping), direct and through PgBouncer", flush=True)
    rows = []
    with running_pgbouncer(ctx.postgres) as bouncer:
        for workers in sizes.workers:
            for route, url in (("direct", ctx.postgres), ("pgbouncer", bouncer.url)):
                n_trials = workers * sizes.trials_per_worker
                row = {"route": route, "n_trials": n_trials,
                       **measure(url, ctx.postgres, workers, n_trials, folder, sleep)}
                if "storage_ms_per_trial" in row:
                    row["storage_percent_of_minilm_trial"] = row["storage_ms_per_trial"] / 10 / trial_s
                rows.append(row)
                shown = (f"{row['storage_ms_per_trial']:.0f} ms/trial "
                         f"({row['storage_percent_of_minilm_trial']:.2f} %), {row['trials_per_s']:.1f} trials/s, "
                         f"{row['surplus_trials']} trials started beyond n_trials"
                         if row["exact"] else f"failed: {row['error'][:120]}")
                print(f"  {workers} workers, {route}: peak {row['peak_server_connections']} server connections, "
                      f"{shown}", flush=True)
    bounced = [r for r in rows if r["route"] == "pgbouncer"]
    worst_pct = max((r.get("storage_percent_of_minilm_trial", float("inf")) for r in bounced), default=None)
    targets = [
        check("PgBouncer: peak server connections / pool size, most workers", max(
            r["peak_server_connections"] for r in bounced) / POOL_SIZE, 1.0,
            detail=", ".join(f"{r['workers']}w: {r['peak_server_connections']}" for r in bounced)
            + "; direct: " + ", ".join(f"{r['workers']}w: {r['peak_server_connections']}"
                                        for r in rows if r["route"] == "direct")),
        check("PgBouncer: runs that missed exactly n_trials", sum(not r["exact"] for r in bounced), 0,
              detail=f"{sizes.trials_per_worker} trials per worker"),
        check("PgBouncer: storage time per trial, % of a MiniLM trial (worst)", worst_pct, 1.0,
              detail=f"MiniLM trial {trial_s:.1f} s ({source}); light trials sleep {sleep:.1f} s"),
    ]
    return {"sizes": sizes, "pool_size": POOL_SIZE, "minilm_trial_s": trial_s, "minilm_trial_source": source,
            "light_trial_s": sleep, "storage": mask_url(ctx.postgres), "rows": rows, "targets": targets}
