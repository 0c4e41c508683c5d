"""Hybrid fine-tuning strategies: a registry of small classes, each configured from its knob group.

Strategies are applied in the registry's order, which is the order that makes them combine:

1. ``distill``    truncates the student first (so "the bottom k blocks" below refer to the student) and
                  replaces the loss;
2. ``freeze``     freezes the embeddings and the bottom blocks;
3. ``lora``       puts adapters on what is frozen (everything but the head when freeze is off);
4. ``importance`` freezes or masks the least important of the parameters still trainable.

This package knows nothing of Optuna, storage or folds: :func:`prepare` is a pure function of a model, a
configuration and (for importance) precomputed scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from hft_search.spec import HybridConfig
from hft_search.strategies.base import LossFn, Setup, Strategy, cross_entropy, unwrap
from hft_search.strategies.distillation import DistillationLoss, DistillStrategy
from hft_search.strategies.freeze import FreezeStrategy
from hft_search.strategies.importance import ELEMENT_SCORES, ImportanceStrategy
from hft_search.strategies.lora import LoraStrategy, merge

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (DistillStrategy, FreezeStrategy, LoraStrategy, ImportanceStrategy)
}
"""Strategy name (= knob group) → class, in the order they are applied."""


def enabled_strategies(config: HybridConfig) -> list[Strategy]:
    """The strategies a configuration switches on, in application order."""
    return [cls.from_config(config) for name, cls in STRATEGIES.items() if getattr(config, name).enabled]


def prepare(model: nn.Module, config: HybridConfig, *,
            importance_scores: Mapping[str, torch.Tensor] | None = None) -> Setup:
    """Apply every enabled strategy to ``model`` (changed in place; LoRA wraps it: use ``Setup.model``)."""
    setup = Setup(model, importance_scores)
    for strategy in enabled_strategies(config):
        strategy.apply(setup)
    return setup


__all__ = [
    "ELEMENT_SCORES",
    "STRATEGIES",
    "DistillStrategy",
    "DistillationLoss",
    "FreezeStrategy",
    "ImportanceStrategy",
    "LoraStrategy",
    "LossFn",
    "Setup",
    "Strategy",
    "cross_entropy",
    "enabled_strategies",
    "merge",
    "prepare",
    "unwrap",
]
