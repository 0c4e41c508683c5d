"""AdamW with exact element masks, parameter groups without decay or at their own rate, and the linear
warm-up/decay schedule.

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

Why the learning rate follows the trainable fraction (:func:`effective_learning_rate`). A configuration that
trains few parameters (LoRA adapters, a frozen bottom, an importance cut) needs a larger rate than a full
fine-tune: LoRA (Hu et al., 2021) and the PEFT recipes train adapters at 1e-4 to 2e-3 where RoBERTa/BERT full
fine-tunes use 1e-5 to 5e-5, and BitFit (Ben Zaken et al., 2022) trains biases at 1e-4 to 1e-3 — 5 to 20 times
more. One shared learning-rate range then wastes half a search on rates that cannot work for the sampled
configuration. So the searched ``training.learning_rate`` means "the full fine-tune's rate", and a configuration
that trains a fraction f of the parameters runs at ``learning_rate · min(max_lr_multiplier, 1/f)``: ×1 for a
full fine-tune, ×2.5 at 40 % trained, ×10 (the default cap) at 10 % or less.

Rates per parameter (:func:`rate_scales`): layer-wise decay (``training.layer_lr_decay``) and LoRA+
(``lora.lr_ratio``) multiply the peak rate per parameter, so the groups above are split by rate too; element-masked
tensors of different rates then sit in different groups, and :meth:`ElementMasks.decay` decays each with its own
group's current rate. The schedule multiplies every group's rate by the same factor.

Restoring masked entries from a saved copy after each step would be exact too, but needs a copy of every
masked tensor; the method above costs one boolean mask per tensor. Frozen tensors (``requires_grad=False``)
are simply not given to the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    groups: list[dict] = field(default_factory=list)  # per parameter, the optimizer group whose lr drives its decay

    def zero_grads(self) -> None:
        """Write +0.0 into the masked gradient entries (call after backward, before clipping)."""
        for param, masked in zip(self.params, self.masked, strict=True):
            if param.grad is not None:
                param.grad.masked_fill_(masked, 0.0)

    @torch.no_grad()
    def decay(self) -> None:
        """Decoupled weight decay on kept entries only (call right before ``optimizer.step()``)."""
        if not self.groups or self.weight_decay == 0:
            return
        for param, masked, decayed, group in zip(self.params, self.masked, self.decayed, self.groups, strict=True):
            if decayed:
                factor = 1.0 - group["lr"] * self.weight_decay
                param.mul_(torch.where(masked, 1.0, factor).to(param.dtype))


def effective_learning_rate(training: TrainingConfig, trainable_fraction: float) -> float:
    """The peak rate a configuration trains at: ``learning_rate · min(max_lr_multiplier, 1 / fraction)``
    (see the module docstring for why)."""
    if not 0 < trainable_fraction <= 1:
        raise ValueError(f"trainable_fraction must be in (0, 1], got {trainable_fraction}")
    return training.learning_rate * min(training.max_lr_multiplier, 1.0 / trainable_fraction)


def rate_scales(network: nn.Module, training: TrainingConfig, lora_ratio: float = 1.0) -> dict[str, float]:
    """The factor on the peak rate of each trainable parameter: layer-wise decay times LoRA+'s ratio.

    Layer-wise decay (``training.layer_lr_decay`` = d; Howard & Ruder 2018, Clark et al. 2020, Zhang et al.
    2021; AutoGluon's ``optim.lr_decay``): the head and the top block train at the rate, block k below the top at
    d^k, the embeddings one step below the bottom block (d^blocks); parameters of neither (a decoder's final
    norm) count as the top. LoRA adapters sit in their block and decay with it. LoRA+ (``lora.lr_ratio`` = λ,
    Hayou et al. 2024): the ``lora_B`` matrices train at λ times the rate of their block; unlike peft's
    ``create_loraplus_optimizer`` the other 1-D parameters do not, since here they belong to fully trained
    blocks, not to the adapters.
    """
    from hft_search.models import layers_of

    layers = layers_of(network)
    prefix, top = layers.family.blocks + ".", layers.num_layers - 1
    embedding = {id(p) for module in layers.embeddings for p in module.parameters()}
    decay = training.layer_lr_decay
    scales = {}
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        depth = 0
        if name.startswith(prefix):
            depth = top - int(name[len(prefix):].split(".", 1)[0])
        elif id(param) in embedding:
            depth = top + 1
        scales[name] = decay ** depth * (lora_ratio if ".lora_B." in name else 1.0)
    return scales


def build_optimizer(network: nn.Module, masks: Mapping[str, torch.Tensor], training: TrainingConfig,
                    device: torch.device, learning_rate: float | None = None,
                    scales: Mapping[str, float] | None = None) -> tuple[torch.optim.AdamW, ElementMasks]:
    """AdamW over the trainable parameters of ``network`` (already on ``device``), and its element masks.

    ``learning_rate`` is the peak rate (None: ``training.learning_rate``; :func:`fine_tune` passes
    :func:`effective_learning_rate`); ``scales`` multiplies it per parameter name (:func:`rate_scales`; None:
    1 for all). Groups: decayed, not decayed (biases, norms) and element-masked (decay applied by
    :class:`ElementMasks`), each split by rate. The schedule scales every group's rate by the same factor.
    """
    skip_decay = no_decay_names(network)
    lr = training.learning_rate if learning_rate is None else learning_rate
    grouped: dict[tuple[str, float], list[nn.Parameter]] = {}
    element = ElementMasks([], [], [], training.weight_decay)
    element_scales = []
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0 if scales is None else scales[name]
        if name in masks:
            element.params.append(param)
            element.masked.append(masks[name].to(device).logical_not())
            element.decayed.append(name not in skip_decay)
            element_scales.append(scale)
            kind = "masked"
        else:
            kind = "plain" if name in skip_decay else "decay"
        grouped.setdefault((kind, scale), []).append(param)
    if not grouped:
        raise ValueError("no parameter is left to train: the strategies froze everything, head included")
    order = {"decay": 0, "plain": 1, "masked": 2}
    keys = sorted(grouped, key=lambda key: (order[key[0]], -key[1]))
    groups = [{"params": grouped[key], "lr": lr * key[1],
               "weight_decay": training.weight_decay if key[0] == "decay" else 0.0} for key in keys]
    optimizer = torch.optim.AdamW(groups, lr=lr, eps=ADAM_EPS, fused=device.type in FUSED_DEVICE_TYPES)
    by_key = dict(zip(keys, optimizer.param_groups, strict=True))
    element.groups = [by_key[("masked", scale)] for scale in element_scales]
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
