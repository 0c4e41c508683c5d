"""bf16 storage for frozen weights while training in bf16, without moving a single bit of them.

On CUDA the forward pass runs under bf16 autocast, so the weight of a frozen projection (``nn.Linear``, GPT-2's
``Conv1D``) is cast to bf16 on every step anyway; keeping it in fp32 only costs memory (4 bytes per parameter
instead of 2). For a decoder LLM fine-tuned with LoRA or a frozen lower half, frozen projections are most of the
model, so storing them in bf16 halves the largest item of the memory bill, and the forward pass computes
exactly what it computed before (autocast would have made the same bf16 copy).

Embeddings and norms stay fp32: they are not autocast, so a bf16 embedding would turn the whole residual stream
bf16 and change the numbers, not just the storage.

Why only where exact: masked and frozen parameters must stay bit-identical through training. A tensor is
stored in bf16 only when every entry is representable in bf16 (``x.bfloat16().float() == x``), which is the
case for the bf16 checkpoints decoder LLMs ship as (Qwen2.5, Llama 3.2, ...): then the round trip
fp32 → bf16 → fp32 returns the very same bits, and :meth:`FrozenBf16.restore` puts every tensor back in fp32 for
evaluation on the CPU, merging LoRA and ``save_pretrained``. A tensor of an fp32 checkpoint that bf16 cannot
hold stays fp32. Parameters that train (the head, LoRA adapters, element-masked tensors) always stay fp32:
AdamW updates smaller than a bf16 weight's spacing would be lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hft_search.families import is_projection


def exactly_bf16(tensor: torch.Tensor) -> bool:
    """Whether every entry of an fp32 tensor survives the round trip through bf16 bit for bit."""
    return bool(torch.equal(tensor.to(torch.bfloat16).to(tensor.dtype), tensor))


@dataclass
class FrozenBf16:
    """The frozen fp32 parameters now stored in bf16, so that :meth:`restore` can give them back."""

    parameters: list[nn.Parameter] = field(default_factory=list)

    @property
    def saved_bytes(self) -> int:
        return sum(2 * p.numel() for p in self.parameters)

    @classmethod
    @torch.no_grad()
    def store(cls, network: nn.Module) -> FrozenBf16:
        """Store the frozen fp32 projection parameters of ``network`` that bf16 holds exactly in bf16 (in place)."""
        stored = cls()
        for module in network.modules():
            if not is_projection(module):
                continue
            for parameter in module.parameters(recurse=False):
                if parameter.requires_grad or parameter.dtype != torch.float32 or not exactly_bf16(parameter):
                    continue
                parameter.data = parameter.data.to(torch.bfloat16)
                stored.parameters.append(parameter)
        return stored

    @torch.no_grad()
    def restore(self) -> None:
        """Back to fp32 (exact: every bf16 value is an fp32 value)."""
        for parameter in self.parameters:
            parameter.data = parameter.data.to(torch.float32)
        self.parameters.clear()
