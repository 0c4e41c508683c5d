"""Benchmark of the fine-tuning engine on the packaged MiniLM and SST-2 rows.

Two questions, answered side by side per device:

1. What does each strategy cost or save? Training examples/s, optimizer-state bytes, trainable fraction and
   peak memory for a full fine-tune, freeze-k, tensor importance at 10 %, element importance at 10 %, LoRA
   and KD (student of half the blocks, precomputed teacher logits), each relative to the full fine-tune.
2. What does our loop cost over a bare hand-written PyTorch loop doing the same full fine-tune
   (:func:`benchmarks._common.bare_fine_tune`: same batches, AdamW, schedule, clipping and autocast)? The
   target is a time ratio <= 1.10. Both whole calls are timed (model copy and optimizer set-up on both
   sides), they alternate, and the best of ``repeats`` is compared, so background load hits both alike.

Before anything is timed, one bare pass goes over every batch shape, so that kernel selection, autotuning and
the allocator's pools are not charged to whichever configuration runs first.

CPU figures are always measured; the accelerator's too when ``--device`` resolves to one. Results print as a
table and merge into ``benchmarks/results/engine.json`` under one key per device and machine (``:quick``
appended for quick sizes), each with its ``targets`` for the suite's table.

    python -m benchmarks.engine            # default sizes, about 4 CPU-minutes on 2 cores
    python -m benchmarks.engine --quick    # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import RESULTS_DIR, SST2_DIR, bare_fine_tune, compare, machine_info, merge_json
from hft_search.data import TokenizedSplit, load_data, tokenize
from hft_search.models import BaseModel, load_base, load_tokenizer
from hft_search.spec import DataSpec, HybridConfig
from hft_search.training import compute_importance, fine_tune, predict_logits, resolve_device

RESULTS = RESULTS_DIR / "engine.json"
TARGET = 1.10
"""Our loop's time over the bare PyTorch loop's, at most."""


@dataclass(frozen=True)
class Sizes:
    rows: int  # on the CPU
    accelerator_rows: int  # on a GPU, where a few hundred rows take milliseconds
    max_length: int
    batch_size: int
    epochs: int
    repeats: int


QUICK = Sizes(rows=32, accelerator_rows=256, max_length=32, batch_size=16, epochs=1, repeats=1)
DEFAULT = Sizes(rows=256, accelerator_rows=8192, max_length=64, batch_size=32, epochs=1, repeats=3)


def strategies(num_layers: int) -> dict[str, dict]:
    """Benchmarked configurations (dotted knobs on top of the shared training knobs)."""
    half = num_layers // 2
    return {
        "full": {},
        f"freeze-{half}": {"freeze.enabled": True, "freeze.layers": half},
        "importance-tensor-10%": {"importance.enabled": True, "importance.threshold": 0.9,
                                  "importance.granularity": "tensor"},
        "importance-element-10%": {"importance.enabled": True, "importance.threshold": 0.9,
                                   "importance.granularity": "element"},
        "lora": {"lora.enabled": True},
        f"kd-{half}-layers": {"distill.enabled": True, "distill.student_layers": half},
    }


def load_inputs(model: str, data_file: Path, rows: int, max_length: int) -> tuple[BaseModel, TokenizedSplit]:
    data = load_data(DataSpec(train=str(data_file), max_train_samples=rows))
    split = tokenize(data.train, load_tokenizer(model), max_length)
    return load_base(model, data.label_names), split


def training_config(sizes: Sizes, **knobs: Any) -> HybridConfig:
    return HybridConfig.from_flat({"training.epochs": sizes.epochs, "training.batch_size": sizes.batch_size,
                                   "training.learning_rate": 5e-5, "training.warmup_ratio": 0.1, **knobs})


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure_strategies(base: BaseModel, train: TokenizedSplit, sizes: Sizes, device: torch.device) -> list[dict]:
    """One fine-tune per strategy; examples/s from its epoch loop (scores and teacher logits precomputed)."""
    scores = compute_importance(base.fresh(0), train, HybridConfig().importance, batch_size=sizes.batch_size,
                                device=device)
    teacher = predict_logits(base.fresh(0), train, device=device)
    rows = []
    for name, knobs in strategies(base.num_layers).items():
        config = training_config(sizes, **knobs)
        result = fine_tune(base, config, train, None, device=device, importance_scores=scores,
                           teacher_logits=teacher if config.distill.enabled else None)
        rows.append({"strategy": name, "examples_per_s": len(train) * sizes.epochs / result.train_time_s,
                     "optimizer_state_bytes": result.optimizer_state_bytes,
                     "trainable_fraction": result.trainable_fraction, "total_params": result.total_params,
                     "peak_memory_mb": result.peak_memory_mb, "train_time_s": result.train_time_s})
    full = rows[0]
    for row in rows:
        row["speed_vs_full"] = row["examples_per_s"] / full["examples_per_s"]
        row["optimizer_state_vs_full"] = row["optimizer_state_bytes"] / full["optimizer_state_bytes"]
    return rows


def measure_overhead(base: BaseModel, train: TokenizedSplit, sizes: Sizes, device: torch.device) -> dict:
    """Seconds of whole full fine-tunes by our engine and by the bare loop, alternating which goes first."""
    config = training_config(sizes)
    runs = {"bare": lambda: bare_fine_tune(base, train, None, config.training, device),
            "ours": lambda: fine_tune(base, config, train, None, device=device)}
    seconds: dict[str, list[float]] = {"ours": [], "bare": []}
    for repeat in range(sizes.repeats):
        for loop in ("bare", "ours") if repeat % 2 == 0 else ("ours", "bare"):
            seconds[loop].append(timed(runs[loop]))
    ours, bare = seconds["ours"], seconds["bare"]
    return {"ours_s": ours, "bare_s": bare, "ratio_best": min(ours) / min(bare),
            "ratio_median": statistics.median(ours) / statistics.median(bare), "target": TARGET}


def run_device(base: BaseModel, train: TokenizedSplit, sizes: Sizes, device: torch.device) -> dict:
    bare_fine_tune(base, train, None, training_config(sizes).training, device)  # warm-up: every batch shape
    strategy_rows = measure_strategies(base, train, sizes, device)
    overhead = measure_overhead(base, train, sizes, device)
    target = compare(f"engine: full fine-tune, our loop / bare PyTorch ({device.type})", min(overhead["ours_s"]),
                     min(overhead["bare_s"]), "bare PyTorch", TARGET)
    facts = {"model": base.name, "rows": len(train), "max_length": sizes.max_length,
             "longest_row": int(train.attention_mask.sum(1).max()), "batch_size": sizes.batch_size,
             "epochs": sizes.epochs, "repeats": sizes.repeats}
    return {"machine": {**machine_info(device), **facts}, "strategies": strategy_rows, "overhead": overhead,
            "targets": [target]}


def print_report(key: str, result: dict) -> None:
    info = result["machine"]
    print(f"\n{key}: {info['cpu_count']} CPUs, {info['torch_threads']} threads, torch {info['torch']}; "
          f"{info['rows']} rows x {info['max_length']} tokens, batch {info['batch_size']}, {info['epochs']} epoch(s)")
    print(f"{'strategy':<24}{'examples/s':>12}{'x full':>8}{'optimizer MB':>14}{'x full':>8}"
          f"{'trainable':>11}{'peak MB':>10}")
    for row in result["strategies"]:
        print(f"{row['strategy']:<24}{row['examples_per_s']:>12.1f}{row['speed_vs_full']:>8.2f}"
              f"{row['optimizer_state_bytes'] / 2**20:>14.1f}{row['optimizer_state_vs_full']:>8.3f}"
              f"{row['trainable_fraction']:>10.1%}{row['peak_memory_mb']:>10.0f}")
    overhead = result["overhead"]
    print(f"our loop vs bare PyTorch (full fine-tune): best {min(overhead['ours_s']):.2f}s vs "
          f"{min(overhead['bare_s']):.2f}s, ratio {overhead['ratio_best']:.3f} "
          f"(median {overhead['ratio_median']:.3f}; target <= {overhead['target']:.2f})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda: the accelerator measured besides the CPU")
    parser.add_argument("--rows", type=int, help="training rows on the CPU (overrides the size preset)")
    parser.add_argument("--accelerator-rows", type=int, help="training rows on the accelerator")
    parser.add_argument("--model", default="minilm", help="model: 'minilm' or a save_pretrained folder")
    parser.add_argument("--data", type=Path, default=SST2_DIR / "train.tsv", help="SST-2 style tsv (text, label)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file the results merge into")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    sizes = replace(sizes, rows=args.rows or sizes.rows,
                    accelerator_rows=args.accelerator_rows or sizes.accelerator_rows)
    rows = {torch.device("cpu"): sizes.rows}
    accelerator = resolve_device(args.device)
    if accelerator.type != "cpu":
        rows[accelerator] = sizes.accelerator_rows
    base, split = load_inputs(args.model, args.data, max(rows.values()), sizes.max_length)
    results = {}
    for device, count in rows.items():
        result = run_device(base, split.subset(range(min(count, len(split)))), sizes, device)
        key = f"{device.type}:{result['machine']['device_name']}:{os.cpu_count()}cpu" + (":quick" if args.quick else "")
        results[key] = result
        print_report(key, result)
    merge_json(args.out, results)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
