"""``python -m benchmarks [NAMES...] [--quick]``: run the benchmarks, write their JSON, build the README table.

    python -m benchmarks                          # the whole suite, published sizes (< 1 h on 2 idle cores)
    python -m benchmarks --quick                  # every benchmark at small sizes: a few minutes
    python -m benchmarks trial_overhead caching   # some of them
    python -m benchmarks --update-readme          # also replace the table between the README's markers

Each benchmark's result is merged into ``<results-dir>/<name>.json`` under its size preset (``full``,
``quick`` or ``smoke``), so a quick run never overwrites the published figures. The table of every target
of that preset goes to ``<results-dir>/README_table.md``; ``--update-readme`` also puts it into README.md
between ``<!-- bench:start -->`` and ``<!-- bench:end -->``.

``engine`` and ``storage`` are scripts with their own command line (``benchmarks/engine.py``,
``benchmarks/storage.py``); the runner calls their ``main`` with the matching options.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import (
    PRESETS,
    RESULTS_DIR,
    ROOT,
    SST2_DIR,
    Context,
    machine_info,
    merge_json,
    quiet_libraries,
)

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
README = ROOT / "README.md"
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")
TABLE_FILE = "README_table.md"


@dataclass(frozen=True)
class Script:
    """A benchmark with its own command line: ``module.main(argv)`` writes ``<results-dir>/<name>.json``."""

    module: str
    argv: Callable[[Context, Path], list[str]]
    targets: Callable[[dict[str, Any], str], list[dict[str, Any]]]


def _engine_argv(ctx: Context, out: Path) -> list[str]:
    return [*(["--quick"] if ctx.preset != "full" else []), "--model", ctx.model, "--data", str(ctx.train),
            "--out", str(out)]


def _engine_targets(data: dict[str, Any], preset: str) -> list[dict[str, Any]]:
    """engine.json holds one entry per device and machine (``device:name:Ncpu``, ``:quick`` for quick sizes),
    possibly measured elsewhere (a GPU host): each target is named with its machine."""
    quick = preset != "full"
    return [{**target, "name": f"{target['name']} [{key.removesuffix(':quick')}]"}
            for key, entry in data.items() if key.endswith(":quick") == quick for target in entry.get("targets", [])]


def _storage_argv(ctx: Context, out: Path) -> list[str]:
    return [*(["--quick"] if ctx.preset != "full" else []), "--minilm-data", str(ctx.train), "--out", str(out),
            *(["--postgres", ctx.postgres] if ctx.postgres else []),
            *(["--workers", "1", "2"] if ctx.preset == "smoke" else [])]


def _storage_targets(data: dict[str, Any], preset: str) -> list[dict[str, Any]]:
    """storage.json holds one entry per size (``full``, ``quick``): the worst storage time per trial."""
    entry = data.get("full" if preset == "full" else "quick")
    if entry is None:
        return []
    worst, limit = entry["worst_percent"], entry["target_percent"]
    return [{"name": "storage time per trial / MiniLM trial (worst storage x workers)", "value": worst,
             "target": limit, "comparison": "<=", "met": worst <= limit, "detail": "percent"}]


SUITE: dict[str, str | Script] = {
    "memory": "benchmarks.memory",
    "trial_overhead": "benchmarks.trial_overhead",
    "caching": "benchmarks.caching",
    "scaling": "benchmarks.scaling",
    "search_quality": "benchmarks.search_quality",
    "decoder": "benchmarks.decoder",
    "distill_ablation": "benchmarks.distill_ablation",
    "setfit_arm": "benchmarks.setfit_arm",
    "engine": Script("benchmarks.engine", _engine_argv, _engine_targets),
    "storage": Script("benchmarks.storage", _storage_argv, _storage_targets),
    "threads": "benchmarks.threads",
    "connections": "benchmarks.connections",
    "study_vs_handwritten": "benchmarks.study_vs_handwritten",
}
"""Every benchmark, in the order the suite runs them (cheap and independent first)."""


def run_benchmark(name: str, ctx: Context) -> float:
    """Run one benchmark and write its JSON; returns its wall time."""
    entry = SUITE[name]
    out = ctx.results_dir / f"{name}.json"
    start = time.perf_counter()
    if isinstance(entry, Script):
        importlib.import_module(entry.module).main(entry.argv(ctx, out))
        return time.perf_counter() - start
    result = importlib.import_module(entry).run(ctx)
    seconds = time.perf_counter() - start
    merge_json(out, {ctx.preset: {"benchmark": name, "preset": ctx.preset, "machine": machine_info(),
                                  "model": ctx.model, "data": {"train": _shown(ctx.train), "dev": _shown(ctx.dev)},
                                  "finished": _now(), "duration_s": seconds, **result}})
    return seconds


def targets_of(name: str, data: dict[str, Any], preset: str) -> list[dict[str, Any]]:
    entry = SUITE[name]
    if isinstance(entry, Script):
        return entry.targets(data, preset)
    return data.get(preset, {}).get("targets", [])


def render_table(results_dir: Path, preset: str) -> str:
    """The Markdown table of every target of ``preset`` found in ``results_dir``."""
    lines = ["| benchmark | figure | measured | target | met |", "|---|---|---|---|---|"]
    machines = set()
    for name in SUITE:
        path = results_dir / f"{name}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        info = data.get(preset, {}).get("machine")
        if info:  # a script's JSON (storage) may record fewer package versions
            versions = ", ".join(f"{package} {info[package]}" for package in ("torch", "transformers", "optuna")
                                 if package in info)
            machines.add(f"{info.get('cpu_count', '?')} CPUs" + (f", {versions}" if versions else ""))
        for target in targets_of(name, data, preset):
            value = target["value"]
            shown = "n/a" if value is None else f"{value:.3g}"
            detail = f" ({_cell(target['detail'])})" if target.get("detail") else ""
            lines.append(f"| {name} | {_cell(target['name'])} | {shown}{detail} | {target['comparison']} "
                         f"{target['target']:g} | {'yes' if target['met'] else '**no**'} |")
    header = (f"_Sizes: `{preset}`; measured on {'; '.join(sorted(machines)) or 'an unrecorded machine'}. "
              "Regenerate with `python -m benchmarks --update-readme`; details in `benchmarks/results/`._")
    return "\n".join([header, "", *lines]) + "\n"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a ``|`` (as in ``|mean (s) - (h)|``) would end the cell."""
    return text.replace("|", "\\|")


def update_readme(table: str, readme: Path = README) -> None:
    """Replace the text between the README's markers with ``table`` (atomically)."""
    text = readme.read_text(encoding="utf-8")
    start, end = (text.find(marker) for marker in MARKERS)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} has no {MARKERS[0]} ... {MARKERS[1]} pair; add both markers where the "
                         "performance table goes, then run again")
    body = text[:start + len(MARKERS[0])] + "\n" + table + text[end:]
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, readme)


def _shown(path: Path) -> str:
    """A data path as the README refers to it: relative to the repository when it is beside it."""
    try:
        return os.path.relpath(path, ROOT)
    except ValueError:
        return str(path)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): "
                        f"{', '.join(SUITE)}")
    parser.add_argument("--quick", dest="preset", action="store_const", const="quick",
                        help="small sizes: every benchmark in a few minutes")
    parser.add_argument("--sizes", dest="preset", choices=PRESETS,
                        help="size preset; smoke is for CI (use it with a tiny --model, --train, --dev)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and the table go")
    parser.add_argument("--update-readme", action="store_true", help="put the table into README.md")
    parser.add_argument("--model", default="minilm", help="'minilm' (packaged) or a save_pretrained folder")
    parser.add_argument("--train", type=Path, default=SST2_DIR / "train.tsv", help="training rows (text, label)")
    parser.add_argument("--dev", type=Path, default=SST2_DIR / "dev.tsv", help="held-out rows (text, label)")
    parser.add_argument("--postgres", default=os.environ.get("HFT_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
                        help="PostgreSQL URL for scaling and storage (default: $HFT_TEST_POSTGRES_URL, else "
                        f"{DEFAULT_POSTGRES}); 'none' skips PostgreSQL")
    parser.add_argument("--threads", type=int, help="torch threads of this process (default: torch's choice)")
    parser.add_argument("--seeds", type=int, nargs="+", help="replace the preset's seeds (search_quality, ...): "
                        "fewer seeds when time is short; the JSON records the seeds that ran")
    parser.add_argument("--work-dir", type=Path, help="keep the scratch folder here instead of a temporary one; "
                        "a re-run with the same folder resumes the studies it holds (search_quality's searches "
                        "stop at their budget, a stored confirmation round is reused; threads measures only the "
                        "configurations it has no row for)")
    parser.add_argument("-v", "--verbose", action="store_true", help="INFO logs of hft_search")
    parser.set_defaults(preset="full")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = [name for name in args.names if name not in SUITE]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SUITE)}")
    for what, path in (("--train", args.train), ("--dev", args.dev)):
        if not path.is_file():
            raise SystemExit(f"{what} {path} does not exist; pass a text/label file (SST-2 is expected in "
                             f"{SST2_DIR})")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    names = args.names or list(SUITE)
    failed = []
    durations: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hft-bench-")))
        else:
            work = args.work_dir.resolve()
            work.mkdir(parents=True, exist_ok=True)
        ctx = Context(preset=args.preset, model=args.model, train=args.train.resolve(), dev=args.dev.resolve(),
                      results_dir=args.results_dir.resolve(), work_dir=work,
                      postgres=None if args.postgres == "none" else args.postgres,
                      seeds=None if args.seeds is None else tuple(args.seeds), resume=args.work_dir is not None)
        for name in names:
            print(f"\n=== {name} ({args.preset}) ===", flush=True)
            start = time.perf_counter()
            try:
                run_benchmark(name, ctx)
            except (Exception, SystemExit):  # one broken benchmark (or a script's exit) must not cost the others
                traceback.print_exc()
                failed.append(name)
            durations[name] = time.perf_counter() - start
            print(f"=== {name}: {durations[name]:.0f} s ===", flush=True)
    table = render_table(args.results_dir, args.preset)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / TABLE_FILE).write_text(table, encoding="utf-8")
    print("\n" + table)
    print("durations: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in durations.items())
          + f"; total {sum(durations.values()) / 60:.1f} min")
    if args.update_readme:
        update_readme(table)
        print(f"updated {README}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
