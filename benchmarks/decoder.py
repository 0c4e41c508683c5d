"""Decoder LLMs: trials per hour and peak memory of the hybrid knobs on a decoder, beside an encoder.

Four configurations, each one CV trial through the worker loop (the search's own code path):

* ``full fine-tune`` — every parameter trains;
* ``LoRA`` — classic LoRA (r = 8) on every attention and MLP projection, only adapters and head train;
* ``freeze half`` — embeddings and the bottom half of the blocks frozen;
* ``element importance 5 %`` — only the 5 % most important entries (``grad_norm``) of the parameters train.

Two settings:

* **CPU** (every preset): a Qwen2-shaped decoder of about 30M parameters (random weights, the run's
  tokenizer) against the run's encoder (MiniLM, 22.7M) on the same rows, in fp32. The decoder has MiniLM's
  width (384) and vocabulary, 8 blocks and a SwiGLU MLP, so the per-trial ratio shows what a decoder costs
  beyond its size.
* **GPU** (``gpu`` in the JSON, where CUDA exists; otherwise ``{"skipped": "no CUDA"}``): a Qwen2.5-0.5B-shaped
  decoder (494M parameters; a two-block one at smoke sizes), random weights saved in bf16 as the real checkpoint
  is, so frozen projections are stored in bf16 during training; bf16 autocast.

Peak memory is the trial's ``peak_memory_mb``: ``torch.cuda.max_memory_allocated`` on the GPU; on the CPU the
training-state estimate (weights, gradients, AdamW state, masks; activations excluded). Trials per hour is
3600 / the trial's wall time. Random weights score at chance: this measures cost, not quality.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import Context, FoldSizes, bench_spec, check, machine_info, timed_trial
from hft_search.caching import Cache
from hft_search.data import load_data
from hft_search.models import load_base, load_tokenizer, model_info
from hft_search.objective import CVObjective
from hft_search.spec import DataSpec
from hft_search.study import open_study


@dataclass(frozen=True)
class DecoderShape:
    """A Qwen2-shaped decoder (grouped-query attention, SwiGLU MLP, RMSNorm, RoPE)."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int | None  # None: the tokenizer's vocabulary size


@dataclass(frozen=True)
class Sizes(FoldSizes):
    batch_size: int
    decoder: DecoderShape  # the CPU decoder
    gpu_decoder: DecoderShape
    gpu_rows: int
    gpu_batch_size: int
    gpu_max_length: int


QWEN25_05B = DecoderShape(hidden=896, layers=24, intermediate=4864, heads=14, kv_heads=2, vocab=151936)
"""Qwen2.5-0.5B's shape (494M parameters with its 151936-token vocabulary)."""
CPU_30M = DecoderShape(hidden=384, layers=8, intermediate=1536, heads=6, kv_heads=2, vocab=None)

TINY = DecoderShape(hidden=32, layers=2, intermediate=64, heads=4, kv_heads=2, vocab=None)
"""The smoke preset's decoder: every code path, no cost."""

SIZES = {
    "full": Sizes(rows=300, folds=3, max_length=48, epochs=1, batch_size=16, decoder=CPU_30M,
                  gpu_decoder=QWEN25_05B, gpu_rows=2048, gpu_batch_size=16, gpu_max_length=128),
    "quick": Sizes(rows=64, folds=2, max_length=32, epochs=1, batch_size=16, decoder=CPU_30M,
                   gpu_decoder=QWEN25_05B, gpu_rows=512, gpu_batch_size=16, gpu_max_length=64),
    "smoke": Sizes(rows=32, folds=2, max_length=16, epochs=1, batch_size=16, decoder=TINY,
                   gpu_decoder=TINY, gpu_rows=64, gpu_batch_size=16, gpu_max_length=32),
}


def configurations(num_layers: int) -> dict[str, dict[str, Any]]:
    """Label → fixed knobs of the four configurations compared."""
    return {
        "full fine-tune": {},
        "LoRA": {"lora.enabled": True, "lora.r": 8, "lora.alpha": 16.0},
        "freeze half": {"freeze.enabled": True, "freeze.layers": num_layers // 2},
        "element importance 5 %": {"importance.enabled": True, "importance.threshold": 0.95,
                                   "importance.granularity": "element"},
    }


def build_decoder(folder: Path, shape: DecoderShape, tokenizer_source: str, dtype: torch.dtype) -> Path:
    """A random Qwen2-shaped classifier with the tokenizer of ``tokenizer_source``, saved in ``dtype``."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    tokenizer = load_tokenizer(tokenizer_source)
    config = Qwen2Config(vocab_size=shape.vocab or len(tokenizer), hidden_size=shape.hidden,
                         num_hidden_layers=shape.layers, intermediate_size=shape.intermediate,
                         num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                         max_position_embeddings=4096, tie_word_embeddings=True, num_labels=2,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(config).to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def measure(ctx: Context, folder: Path, model: str, *, rows: int, folds: int, max_length: int, epochs: int,
            batch_size: int, device: torch.device) -> list[dict[str, Any]]:
    """One CV trial per configuration of ``model`` on ``device``: time, peak memory, trainable fraction."""
    run_ctx = dataclasses.replace(ctx, model=model)
    data = load_data(DataSpec(train=str(ctx.train), max_train_samples=rows))
    info = model_info(model)
    base = load_base(model, data.label_names)
    results = []
    for number, (label, knobs) in enumerate(configurations(info.num_layers).items()):
        fixed = {"training.epochs": epochs, "training.batch_size": batch_size, **knobs}
        spec = bench_spec(run_ctx, f"decoder-{number}", folder / f"{info.family}-{number}", rows=rows,
                          max_length=max_length, folds=folds, fixed=fixed, device=device.type)
        objective = CVObjective(spec, cache=Cache(spec.cache_dir), data=data, base=base)
        trial, seconds = timed_trial(open_study(spec), objective)
        if trial.value is None:
            raise RuntimeError(f"{label} on {info.family} ended {trial.state.name}: {trial.user_attrs}")
        attrs = trial.user_attrs
        results.append({"model": info.family, "parameters": info.parameters, "configuration": label,
                        "trial_seconds": seconds, "trials_per_hour": 3600 / seconds,
                        "peak_memory_mb": attrs["peak_memory_mb"], "trainable_fraction": attrs["trainable_fraction"],
                        "score": trial.value})
        print(f"  {info.family:<8}{info.parameters / 1e6:>8.1f}M  {label:<24}{seconds:>9.2f} s{3600 / seconds:>10.0f}"
              f"{attrs['peak_memory_mb']:>11.1f}{attrs['trainable_fraction']:>10.1%}", flush=True)
    return results


def _row(results: list[dict[str, Any]], model: str, configuration: str) -> dict[str, Any]:
    return next(r for r in results if r["model"] == model and r["configuration"] == configuration)


def _header(title: str) -> None:
    print(title, flush=True)
    print(f"  {'model':<8}{'params':>9}  {'configuration':<24}{'trial':>11}{'trials/h':>10}{'peak MB':>11}"
          f"{'trained':>10}", flush=True)


def run_cpu(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    folder = ctx.folder("decoder")
    decoder = build_decoder(folder / "decoder-model", sizes.decoder, ctx.model, torch.float32)
    _header(f"decoder vs encoder on the CPU: {sizes.rows} rows, {sizes.folds} folds, {sizes.epochs} epoch(s), "
            f"batch {sizes.batch_size}, max_length {sizes.max_length}")
    common = {"rows": sizes.rows, "folds": sizes.folds, "max_length": sizes.max_length, "epochs": sizes.epochs,
              "batch_size": sizes.batch_size, "device": torch.device("cpu")}
    results = measure(ctx, folder, str(decoder), **common) + measure(ctx, folder, ctx.model, **common)
    family = "qwen2"
    encoder = next(r["model"] for r in results if r["model"] != family)
    full, lora = _row(results, family, "full fine-tune"), _row(results, family, "LoRA")
    enc_full = _row(results, encoder, "full fine-tune")
    targets = [
        check("decoder / encoder of similar size, full fine-tune trial time (CPU)",
              full["trial_seconds"] / enc_full["trial_seconds"], 2.0,
              detail=f"qwen2 {full['parameters'] / 1e6:.1f}M {full['trial_seconds']:.2f} s vs {encoder} "
                     f"{enc_full['parameters'] / 1e6:.1f}M {enc_full['trial_seconds']:.2f} s"),
        check("decoder LoRA / full fine-tune training state (CPU)", lora["peak_memory_mb"] / full["peak_memory_mb"],
              0.5, detail=f"{lora['peak_memory_mb']:.1f} MB vs {full['peak_memory_mb']:.1f} MB"),
    ]
    return {"machine": machine_info("cpu"), "decoder_shape": sizes.decoder, "rows": results, "targets": targets}


def run_gpu(ctx: Context, sizes: Sizes) -> dict[str, Any]:
    if not torch.cuda.is_available():
        print("  GPU: skipped (no CUDA)", flush=True)
        return {"skipped": "no CUDA"}
    folder = ctx.folder("decoder-gpu")
    decoder = build_decoder(folder / "gpu-decoder", sizes.gpu_decoder, ctx.model, torch.bfloat16)
    _header(f"Qwen2-shaped decoder on {torch.cuda.get_device_name()} in bf16: {sizes.gpu_rows} rows, "
            f"{sizes.folds} folds, batch {sizes.gpu_batch_size}, max_length {sizes.gpu_max_length}")
    results = measure(ctx, folder, str(decoder), rows=sizes.gpu_rows, folds=sizes.folds,
                      max_length=sizes.gpu_max_length, epochs=sizes.epochs, batch_size=sizes.gpu_batch_size,
                      device=torch.device("cuda"))
    full = _row(results, "qwen2", "full fine-tune")
    targets = [check(f"{label} / full fine-tune peak GPU memory ({full['parameters'] / 1e6:.0f}M decoder, bf16)",
                     _row(results, "qwen2", label)["peak_memory_mb"] / full["peak_memory_mb"], limit,
                     detail=f"{_row(results, 'qwen2', label)['peak_memory_mb']:.0f} MB vs "
                            f"{full['peak_memory_mb']:.0f} MB")
               for label, limit in (("LoRA", 0.5), ("freeze half", 0.8))]
    return {"machine": machine_info("cuda"), "decoder_shape": sizes.gpu_decoder, "rows": results, "targets": targets}


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    cpu = run_cpu(ctx, sizes)
    gpu = run_gpu(ctx, sizes)
    return {"sizes": sizes, "cpu": cpu, "gpu": gpu, "targets": cpu["targets"] + gpu.get("targets", [])}
