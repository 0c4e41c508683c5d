"""Where a fine-tune runs, and the mixed precision it uses there.

``auto`` picks CUDA, then Apple MPS, then the CPU. bf16 autocast is used on CUDA only: it halves activation
memory and uses tensor cores without the loss scaling fp16 would need; on CPU and MPS bf16 matmuls are often
slower than fp32, so they run in fp32.
"""

from __future__ import annotations

import contextlib

import torch

from hft_search.exceptions import SpecError, SpecIssue


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` → the best available device; ``cuda``/``cuda:1``/``mps``/``cpu`` → that device, if present."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpecError([SpecIssue("device", f"{name!r} is not a device; use auto, cpu, cuda or mps")]) \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError([SpecIssue("device", "cuda was asked for but torch sees no GPU; use auto or cpu")])
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SpecError([SpecIssue("device", "mps was asked for but is not available; use auto or cpu")])
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
