"""int8 quantization of the linear layers for CPU inference, with torchao through ``transformers``.

Why torchao and not ``torch.ao.quantization.quantize_dynamic``: the latter (eager mode) is deprecated since
torch 2.10 and slated for removal; torchao's ``quantize_`` is its successor. Going through ``transformers``'
``TorchAoConfig`` adds one thing that matters here: the quantized model is written by ``save_pretrained`` as
safetensors with the quantization settings in ``config.json``, so the ``int8/`` folder loads with
``AutoModelForSequenceClassification.from_pretrained`` alone (torchao installed) — the loader is the standard one.

Two schemes, because the right one depends on the CPU:

* ``dynamic`` — int8 weights *and* activations quantized per token at run time
  (``Int8DynamicActivationInt8WeightConfig``): the matmul itself runs in int8 (``torch._int_mm``). That is fast
  only where the CPU has int8 dot-product instructions (AVX512-VNNI or AMX). On a CPU with AVX2 only,
  PyTorch's int8 matmul is a slow reference kernel: measured 10–30x *slower* than fp32 for MiniLM-sized
  layers, and ``torch.compile`` does not rescue it.
* ``weight_only`` — int8 weights per output channel, dequantized into an fp32 matmul
  (``Int8WeightOnlyConfig``): the linear weights take a quarter of the space, and latency stays at fp32's.

``auto`` picks ``dynamic`` on a CPU with VNNI/AMX and ``weight_only`` otherwise, and says why in the report.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from hft_search.data import TokenizedSplit
from hft_search.exceptions import ExportError
from hft_search.pooling import register_saved

logger = logging.getLogger(__name__)

Int8Scheme = Literal["auto", "dynamic", "weight_only"]
INT8_SCHEMES: tuple[str, ...] = ("auto", "dynamic", "weight_only")
QUANTIZE_INSTALL_HINT = 'pip install "hft_search[quantize]"  (torchao)'


def cpu_has_int8_dot() -> bool:
    """Whether this CPU multiplies int8 matrices natively (AVX512-VNNI or AMX); torch's query is private."""
    probes = (getattr(torch.cpu, "_is_vnni_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(probe()) for probe in probes if probe is not None)


def choose_scheme(requested: Int8Scheme) -> tuple[str, str]:
    """The scheme to use and why (``auto`` decides by the CPU, see the module docstring)."""
    if requested not in INT8_SCHEMES:
        raise ExportError(f"int8 scheme {requested!r} is unknown; use one of {', '.join(INT8_SCHEMES)}")
    if requested != "auto":
        return requested, "chosen by the user"
    if cpu_has_int8_dot():
        return "dynamic", "this CPU has int8 dot-product instructions (VNNI/AMX)"
    return "weight_only", ("this CPU lacks VNNI/AMX, where int8 activation matmuls are far slower than fp32; "
                           "int8 weights are dequantized into fp32 matmuls instead")


def _torchao_config(scheme: str) -> Any:
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    except ImportError:
        raise ExportError(f"--quantize int8 needs torchao: {QUANTIZE_INSTALL_HINT}") from None
    return Int8DynamicActivationInt8WeightConfig() if scheme == "dynamic" else Int8WeightOnlyConfig()


def quantize_folder(model_dir: Path, out_dir: Path, scheme: str) -> nn.Module:
    """Load the fp32 model in ``model_dir`` quantized to int8, save it to ``out_dir``; return it (CPU, eval)."""
    from transformers import AutoModelForSequenceClassification, TorchAoConfig

    config = TorchAoConfig(_torchao_config(scheme))
    register_saved(model_dir)  # a model with its own pooling (hft_search.pooling) loads as the same class
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, quantization_config=config,
                                                               device_map="cpu")
    model.save_pretrained(out_dir)
    return model.eval()


def weights_size_mb(folder: Path) -> float:
    """Size of the weight files of a ``save_pretrained`` folder, in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors")) / 1e6


def cpu_latency_ms(model: nn.Module, split: TokenizedSplit, batch_size: int = 32, repeats: int = 7) -> float:
    """Median CPU wall time of one forward pass over the first ``batch_size`` rows, after one warm-up."""
    rows = torch.arange(min(batch_size, len(split)))
    batch = {k: v for k, v in split.batch(rows).items() if k != "labels"}
    model = model.to("cpu").eval()
    times = []
    with torch.inference_mode():
        model(**batch)
        for _ in range(repeats):
            start = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@dataclass(frozen=True)
class Footprint:
    """One model's side of the before/after comparison."""

    size_mb: float
    latency_ms: float  # per batch, CPU
    score: float | None  # the spec's metric on the test split (None without a test split)


@dataclass(frozen=True)
class QuantizationReport:
    scheme: str
    reason: str
    path: str  # relative to the model folder
    batch_size: int
    threads: int
    metric: str
    fp32: Footprint
    int8: Footprint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> QuantizationReport:
        return cls(**{**raw, "fp32": Footprint(**raw["fp32"]), "int8": Footprint(**raw["int8"])})

    def table(self) -> str:
        """The before/after comparison, side by side."""
        def cell(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        rows = [("", "fp32", f"int8 ({self.scheme})"),
                ("size MB", cell(self.fp32.size_mb, ".2f"), cell(self.int8.size_mb, ".2f")),
                (f"test {self.metric}", cell(self.fp32.score, ".4f"), cell(self.int8.score, ".4f")),
                (f"CPU ms / batch of {self.batch_size}", cell(self.fp32.latency_ms, ".1f"),
                 cell(self.int8.latency_ms, ".1f"))]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                   strict=True)))
                 for row in rows]
        return "\n".join(lines + [f"({self.reason}; CPU threads: {self.threads})"])
