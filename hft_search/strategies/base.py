"""What a strategy is, and the :class:`Setup` that strategies change before training starts.

Why a shared ``Setup`` rather than each strategy returning a model: strategies decide more than weights.
Importance leaves element masks and a cut value, distillation replaces the loss, LoRA wraps the model.
The training loop reads all of it from one object, so adding a strategy never changes the loop's signature.

Parameter names in a ``Setup`` are those of :func:`unwrap` (the network under a peft wrapper), which are the
names of the plain Hugging Face model for every parameter LoRA does not touch. Importance scores computed on
``base.fresh(seed)`` therefore line up with the parameters of a (possibly truncated, possibly adapted) model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hft_search.spec import HybridConfig

LossFn = Callable[..., torch.Tensor]
"""``loss(student_logits, labels, teacher_logits_or_None, hidden_or_None) -> scalar``; ``hidden`` is the pair of
pooled block states of the distillation's hidden-state term (see ``strategies.distillation``)."""


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                  hidden: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The plain classification loss; ignores teacher logits (used when distillation is off)."""
    return F.cross_entropy(logits, labels)


def unwrap(model: nn.Module) -> nn.Module:
    """The network under a peft wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class Setup:
    """A model being prepared for training and what the strategies decided about it.

    ``masks`` maps a parameter name (of :func:`unwrap` of ``model``) to a boolean *keep* mask of its shape:
    only the ``True`` entries are trained. Parameters with ``requires_grad=False`` are frozen whole and never
    appear here.
    """

    model: nn.Module
    importance_scores: Mapping[str, torch.Tensor] | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    importance_cut: float | None = None
    loss: LossFn = cross_entropy

    @property
    def network(self) -> nn.Module:
        return unwrap(self.model)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters that receive gradients, by name (element-masked ones included)."""
        return {name: p for name, p in self.network.named_parameters() if p.requires_grad}

    def trainable_count(self) -> int:
        """Exact number of trained parameter entries: masked tensors count only their kept elements."""
        return sum(
            int(self.masks[name].sum()) if name in self.masks else p.numel()
            for name, p in self.trainable_parameters().items()
        )

    def total_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


class Strategy(ABC):
    """One way of training only part of a model, configured from its knob group of :class:`HybridConfig`.

    Subclasses set ``name`` to their knob group (``freeze``, ``importance``, ...) and implement :meth:`apply`.
    """

    name: ClassVar[str]

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: HybridConfig) -> Strategy:
        """Build from a whole configuration; strategies that depend on another group override this."""
        return cls(getattr(config, cls.name))

    @abstractmethod
    def apply(self, setup: Setup) -> None:
        """Change ``setup`` (its model, masks or loss) in place."""
