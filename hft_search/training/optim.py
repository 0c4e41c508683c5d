"""AdamW with exact element masks, parameter groups without decay, and the linear warm-up/decay schedule.

Parameter groups follow ``transformers.Trainer``: biases and normalisation weights get no weight decay.
AdamW is ``fused=True`` where torch has a fused kernel for the device (as the Trainer does by default).

Why masked entries stay bit-identical. An element-masked tensor is trained whole by AdamW, so two things
could move its masked entries, and each is closed exactly:

1. *Gradient and momentum.* After every backward pass, and before clipping, :meth:`ElementMasks.zero_grads`
   writes +0.0 into the masked gradient entries (``masked_fill_``). Clipping scales gradients by a finite
   factor (0·c = 0). AdamW's moments start at exactly 0 and stay 0 under zero gradients
   (β·0 + (1-β)·0 = 0), so the update of a masked entry is lr·0/(√0 + ε) = 0 with ε > 0, and
   θ − 0 = θ bit for bit in IEEE arithmetic. This holds for the single-tensor, foreach and fused kernels,
   which all compute the same moments.
2. *Decoupled weight decay* (θ ← θ·(1 − lr·λ)) does not look at the gradient, so masked tensors sit in a
   parameter group with ``weight_decay=0`` and :meth:`ElementMasks.decay` applies the decay itself, before
   the step and with the step's learning rate, as AdamW does: it multiplies by a factor that is
   (1 − lr·λ) on kept entries and exactly 1.0 on masked ones, and x·1.0 = x bit for bit.

Restoring masked entries from a saved copy after each step would be exact too, but needs a copy of every
masked tensor; the method above costs one boolean mask per tensor. Frozen tensors (``requires_grad=False``)
are simply not given to the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hft_search.spec import TrainingConfig

ADAM_EPS = 1e-8  # must stay > 0: the exactness of masked entries divides 0 by ε (see the module docstring)
FUSED_DEVICE_TYPES = ("cuda", "cpu", "mps")


def no_decay_names(network: nn.Module) -> set[str]:
    """Biases and the weights of normalisation layers (LayerNorm, RMSNorm, ...), which get no weight decay."""
    names = set()
    for module_name, module in network.named_modules():
        is_norm = isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower()
        for param_name, _ in module.named_parameters(recurse=False):
            if is_norm or param_name == "bias":
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


@dataclass
class ElementMasks:
    """Element-masked parameters of one optimizer, bit-identical where masked (see the module docstring)."""

    params: list[nn.Parameter]
    masked: list[torch.Tensor]  # True where the entry must not move
    decayed: list[bool]  # whether the parameter gets (manual) weight decay
    weight_decay: float
    group: dict | None = None  # the optimizer group holding them, whose current lr drives the decay

    def zero_grads(self) -> None:
        """Write +0.0 into the masked gradient entries (call after backward, before clipping)."""
        for param, masked in zip(self.params, self.masked, strict=True):
            if param.grad is not None:
                param.grad.masked_fill_(masked, 0.0)

    @torch.no_grad()
    def decay(self) -> None:
        """Decoupled weight decay on kept entries only (call right before ``optimizer.step()``)."""
        if self.group is None or self.weight_decay == 0:
            return
        factor = 1.0 - self.group["lr"] * self.weight_decay
        for param, masked, decayed in zip(self.params, self.masked, self.decayed, strict=True):
            if decayed:
                param.mul_(torch.where(masked, 1.0, factor).to(param.dtype))


def build_optimizer(network: nn.Module, masks: Mapping[str, torch.Tensor], training: TrainingConfig,
                    device: torch.device) -> tuple[torch.optim.AdamW, ElementMasks]:
    """AdamW over the trainable parameters of ``network`` (already on ``device``), and its element masks.

    Groups: decayed, not decayed (biases, norms), and element-masked (decay applied by :class:`ElementMasks`).
    """
    skip_decay = no_decay_names(network)
    decay, plain = [], []
    element = ElementMasks([], [], [], training.weight_decay)
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        if name in masks:
            element.params.append(param)
            element.masked.append(masks[name].to(device).logical_not())
            element.decayed.append(name not in skip_decay)
        else:
            (plain if name in skip_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": training.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    groups = [group for group in groups if group["params"]]
    if element.params:
        groups.append({"params": element.params, "weight_decay": 0.0})
    if not groups:
        raise ValueError("no parameter is left to train: the strategies froze everything, head included")
    optimizer = torch.optim.AdamW(groups, lr=training.learning_rate, eps=ADAM_EPS,
                                  fused=device.type in FUSED_DEVICE_TYPES)
    if element.params:
        element.group = optimizer.param_groups[-1]
    return optimizer, element


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ⌈warmup_ratio · total_steps⌉ steps, then linear decay to 0 at ``total_steps``.

    The factor of ``transformers.get_linear_schedule_with_warmup``, written out: importing that function
    imports ``transformers.trainer_utils``, which imports ``peft`` and, where installed, ``torchao``, whose
    load messages every ``run`` would then print, for seconds of import time.
    """
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the optimizer's state tensors (AdamW: two moments per trained parameter, step counts)."""
    return sum(value.numel() * value.element_size() for state in optimizer.state.values()
               for value in state.values() if isinstance(value, torch.Tensor))
