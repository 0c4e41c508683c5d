"""Memory: optimizer state and peak training memory against the trainable fraction.

The claim under test: a parameter that does not train costs no optimizer memory. Frozen layers and tensors
cut by tensor-granularity importance get ``requires_grad=False`` and never enter AdamW, so the optimizer
state is 8 bytes (two fp32 moments) per *trained* parameter, whatever the fraction. Element-granularity
importance is the contrast: its masked tensors train whole, so it saves no optimizer memory (it exists to
choose finer, not to save memory).

Each configuration is one real fine-tune (``fine_tune``, 1 epoch) on the same rows with the same importance
scores. Peak memory is ``FineTuneResult.peak_memory_mb``: on the CPU the training state (parameters and
buffers, gradients of trained tensors, optimizer state, masks; activations excluded), on CUDA
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks._common import Context, check
from hft_search.data import load_data, tokenize
from hft_search.models import load_base, load_tokenizer
from hft_search.spec import DataSpec, HybridConfig, ImportanceConfig
from hft_search.training import compute_importance, fine_tune

ADAMW_BYTES = 8
"""AdamW's state per trained fp32 parameter: the first and second moments."""


@dataclass(frozen=True)
class Sizes:
    rows: int
    max_length: int
    batch_size: int
    thresholds: tuple[float, ...]  # importance quantiles of the tensor-granularity rows


SIZES = {
    "full": Sizes(rows=64, max_length=32, batch_size=16, thresholds=(0.25, 0.5, 0.75, 0.9)),
    "quick": Sizes(rows=32, max_length=32, batch_size=16, thresholds=(0.5, 0.9)),
    "smoke": Sizes(rows=16, max_length=16, batch_size=8, thresholds=(0.5, 0.9)),
}


def configurations(num_layers: int, thresholds: tuple[float, ...]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Label → (kind, knobs). Kinds: ``full``, ``freeze``, ``tensor`` (importance), ``element`` (importance)."""
    rows: dict[str, tuple[str, dict[str, Any]]] = {"full fine-tune": ("full", {})}
    for layers in sorted({max(1, num_layers // 3), max(1, 2 * num_layers // 3), num_layers}):
        rows[f"freeze {layers} of {num_layers} blocks"] = ("freeze", {"freeze.enabled": True,
                                                                      "freeze.layers": layers})
    for q in thresholds:
        rows[f"importance tensor q={q:g}"] = ("tensor", {"importance.enabled": True, "importance.threshold": q,
                                                         "importance.granularity": "tensor"})
    q = max(thresholds)
    rows[f"importance element q={q:g}"] = ("element", {"importance.enabled": True, "importance.threshold": q,
                                                       "importance.granularity": "element"})
    return rows


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    data = load_data(DataSpec(train=str(ctx.train), max_train_samples=sizes.rows))
    base = load_base(ctx.model, data.label_names)
    train = tokenize(data.train, load_tokenizer(ctx.model), sizes.max_length)
    knobs = {"training.epochs": 1, "training.batch_size": sizes.batch_size}
    scores = compute_importance(base.fresh(0), train, ImportanceConfig(), batch_size=sizes.batch_size, device="cpu")
    print(f"memory: {len(train)} rows, max_length {sizes.max_length}, batch {sizes.batch_size}, 1 epoch each",
          flush=True)
    print(f"  {'configuration':<30}{'trainable':>11}{'optimizer MB':>14}{'x full':>8}{'bytes/trained':>15}"
          f"{'peak MB':>10}{'x full':>8}")
    rows = []
    for label, (kind, extra) in configurations(base.num_layers, sizes.thresholds).items():
        result = fine_tune(base, HybridConfig.from_flat({**knobs, **extra}), train, None, device="cpu",
                           importance_scores=scores)
        rows.append({"configuration": label, "kind": kind, "trainable_params": result.trainable_params,
                     "total_params": result.total_params, "trainable_fraction": result.trainable_fraction,
                     "optimizer_state_bytes": result.optimizer_state_bytes,
                     "bytes_per_trained_param": result.optimizer_state_bytes / result.trainable_params,
                     "peak_memory_mb": result.peak_memory_mb})
    full = rows[0]
    for row in rows:
        row["optimizer_state_vs_full"] = row["optimizer_state_bytes"] / full["optimizer_state_bytes"]
        row["peak_memory_vs_full"] = row["peak_memory_mb"] / full["peak_memory_mb"]
        print(f"  {row['configuration']:<30}{row['trainable_fraction']:>10.1%}"
              f"{row['optimizer_state_bytes'] / 2**20:>14.1f}{row['optimizer_state_vs_full']:>8.3f}"
              f"{row['bytes_per_trained_param']:>15.2f}{row['peak_memory_mb']:>10.1f}{row['peak_memory_vs_full']:>8.3f}")
    saving = [row for row in rows if row["kind"] in ("freeze", "tensor")]
    smallest = min(saving, key=lambda row: row["trainable_fraction"])
    targets = [
        check("optimizer bytes per trained parameter, frozen and tensor-cut rows (AdamW: 8)",
              max(row["bytes_per_trained_param"] for row in saving), ADAMW_BYTES * 1.01,
              detail="frozen parameters cost no optimizer state"),
        check("optimizer state / trainable fraction at the smallest fraction (vs full fine-tune)",
              smallest["optimizer_state_vs_full"] / smallest["trainable_fraction"], 1.01,
              detail=f"{smallest['configuration']}: {smallest['trainable_fraction']:.1%} trained, "
                     f"{smallest['optimizer_state_vs_full']:.1%} of the full optimizer state"),
    ]
    return {"sizes": sizes, "peak_memory": "training-state estimate on the CPU (activations excluded)",
            "rows": rows, "targets": targets}
