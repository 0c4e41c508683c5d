"""Will a fine-tune fit the device? An estimate made before training, and a one-line refusal when it cannot.

Why: a configuration that cannot fit (a full fine-tune of a 7B decoder on a 24 GB card, say) would otherwise
load the model, allocate, and die of CUDA out-of-memory in every trial that samples it, after seconds or
minutes each. Refusing it before anything is moved to the device costs nothing and says what to change.

The estimate, per part (bytes):

* weights — every parameter and buffer at its storage dtype (frozen projections may be bf16, see
  :mod:`.precision`);
* gradients — one per trained parameter, at its dtype (4 bytes in fp32);
* optimizer — AdamW's two fp32 moments, 8 bytes per trained parameter (element-masked tensors train whole);
* masks — element masks: 1 byte per entry of a masked tensor (the frozen-entry mask the optimizer keeps on
  the device; the keep masks of ``Setup.masks`` are built while the model is still on the CPU and stay there),
  plus a transient 4-byte decay factor for the largest masked tensor. Element importance therefore costs about
  1 byte per parameter of the masked tensors on the device beyond AdamW's 8 bytes: affordable next to the
  16 bytes of a full fine-tune. The scores are accumulated in fp32 (the model's dtype: the template is fp32)
  on the device while they are computed (once per fold, before training), then kept in fp32 on the CPU and
  in the cache: they take no device memory during training.
* activations — what backward needs, per token of the largest batch: about ``10·h + 3·i`` values per block
  (h the hidden size, i the MLP width: the inputs of the attention and MLP projections, the attention and
  MLP outputs, norms and residuals; attention scores are not kept with SDPA), at 2 bytes under bf16 autocast
  and 4 otherwise. With gradient checkpointing only each block's input (h values) is kept, plus one block's
  activations during its recomputation.

Weights, gradients, optimizer state and masks are exact; activations are an estimate, and allocator slack and
temporary buffers are not counted. So the check refuses what would almost surely run out of memory; a
configuration that passes can still run out, and then ends its trial as before (recorded as out of memory).
The check runs on CUDA, where the model must be copied into a memory of fixed size; on the CPU the model is
already in RAM and an overflow swaps rather than fails, so nothing is refused there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hft_search.exceptions import DeviceMemoryError
from hft_search.families import layers_of

ADAMW_STATE_BYTES = 8
MASK_BYTES = 1
CHECKPOINTING_AUTO_PARAMS = 1_000_000_000
"""``training.gradient_checkpointing: auto`` turns it on from this many parameters. Checkpointing recomputes
every block's forward pass in backward (about a third more compute per step), which small models do not need:
MiniLM, GPT-2 or Qwen2.5-0.5B fully fine-tuned at batch 32 × 128 tokens need under 16 GiB. From 1B parameters
(Llama-3.2-1B: ~20 GiB of weights, gradients and AdamW state before activations) the activations are what
decides whether a trial fits a 24–40 GiB card."""


def wants_checkpointing(setting: bool | str, network: nn.Module) -> bool:
    """``training.gradient_checkpointing`` resolved for ``network``: ``auto`` by its parameter count."""
    if setting == "auto":
        return sum(p.numel() for p in network.parameters()) >= CHECKPOINTING_AUTO_PARAMS
    return bool(setting)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a fine-tune needs on its device, by part (see the module docstring)."""

    weights: int
    gradients: int
    optimizer: int
    masks: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.masks + self.activations

    def describe(self) -> str:
        parts = ("weights", "gradients", "optimizer", "masks", "activations")
        return ", ".join(f"{part} {_gib(getattr(self, part))}" for part in parts)


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"


def _widths(config: object) -> tuple[int, int]:
    """Hidden size and MLP width from a transformers config (GPT-2 names them ``n_embd`` and ``n_inner``)."""
    hidden = int(config.hidden_size)
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return hidden, int(inner)


def estimate_training_memory(network: nn.Module, masks: dict[str, torch.Tensor], *, batch_size: int,
                             sequence_length: int, bf16: bool, checkpointing: bool) -> MemoryEstimate:
    """The estimate for training ``network`` (strategies applied) on batches of ``batch_size`` rows."""
    trained = [(name, p) for name, p in network.named_parameters() if p.requires_grad]
    weights = sum(t.numel() * t.element_size() for t in (*network.parameters(), *network.buffers()))
    gradients = sum(p.numel() * p.element_size() for _, p in trained)
    masked = [p.numel() for name, p in trained if name in masks]
    hidden, inner = _widths(network.config)
    blocks = layers_of(network).num_layers
    tokens = batch_size * sequence_length
    per_block = (10 * hidden + 3 * inner) * tokens
    values = blocks * hidden * tokens + per_block if checkpointing else blocks * per_block
    return MemoryEstimate(weights=weights, gradients=gradients,
                          optimizer=ADAMW_STATE_BYTES * sum(p.numel() for _, p in trained),
                          masks=MASK_BYTES * sum(masked) + 4 * max(masked, default=0),
                          activations=values * (2 if bf16 else 4))


def free_device_memory(device: torch.device) -> int | None:
    """Bytes this process can still allocate on a CUDA device (free memory plus its own unused cache);
    None on other devices, where nothing is refused (see the module docstring)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def check_fits(estimate: MemoryEstimate, available: int | None, device: torch.device) -> None:
    """Raise :class:`DeviceMemoryError` (one line, with what to change) when ``estimate`` exceeds ``available``."""
    if available is None or estimate.total <= available:
        return
    raise DeviceMemoryError(
        f"this configuration needs about {_gib(estimate.total)} on {device} but {_gib(available)} is free "
        f"({estimate.describe()}); train fewer parameters (lora, freeze.layers, importance with tensor "
        "granularity), lower training.batch_size or model.max_length, or set training.gradient_checkpointing: true")
