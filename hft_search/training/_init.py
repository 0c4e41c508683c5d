"""The model a fine-tune starts from (dropout override, truncated student, re-initialised top blocks).

Kept apart from the training loop because the cross-validator needs the very same model before training:
importance scores must describe what is trained (see :func:`initial_model`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from hft_search.models import BaseModel, family_of, get_module, layers_of, select_blocks
from hft_search.spec import HybridConfig
from hft_search.strategies.distillation import student_blocks

logger = logging.getLogger("hft_search.training.loop")  # the name users filter the engine's messages on

REINIT_SEED_OFFSET = 0x5EED_0000
"""Added to the fit's seed for ``training.reinit_layers`` (see :func:`reinitialise_top`)."""


def set_dropout(model: nn.Module, p: float | None) -> None:
    """Override every dropout probability of the model (attention dropout included); None keeps them."""
    if p is None:
        return
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def initial_model(base: BaseModel, config: HybridConfig, seed: int) -> nn.Module:
    """The model a fine-tune starts from: ``base.fresh(seed)``, the dropout override, the distillation
    student's blocks (``distill.student_init``) and the re-initialised top blocks (``training.reinit_layers``).

    Why one helper: importance scores must describe the very model that is trained. For a truncated student
    that is the student (after truncation, before freeze, LoRA or masks), so the cross-validator scores the
    model this function returns, and :func:`~hft_search.training.loop.fine_tune` trains it.
    """
    model = base.fresh(seed)
    set_dropout(model, config.training.dropout)
    wanted = config.distill.student_layers
    if config.distill.enabled and wanted is not None and wanted < base.num_layers:
        select_blocks(model, student_blocks(base.num_layers, wanted, config.distill.student_init))
    count = reinit_count(config, layers_of(model).num_layers)
    if count:
        reinitialise_top(model, count, seed)
    return model


def reinit_count(config: HybridConfig, num_layers: int) -> int:
    """How many top blocks ``training.reinit_layers`` re-initialises: never a block the freeze strategy
    freezes (a frozen random block would never learn), so at most the blocks above the frozen ones."""
    frozen = min(config.freeze.layers, num_layers) if config.freeze.enabled else 0
    count = min(config.training.reinit_layers, num_layers - frozen)
    if count < config.training.reinit_layers:
        logger.info("training.reinit_layers=%d: only the %d block(s) above the frozen ones are re-initialised",
                    config.training.reinit_layers, count)
    return count


def reinitialise_top(model: nn.Module, count: int, seed: int) -> None:
    """Re-initialise the top ``count`` blocks and the pretrained part of the head (BERT's pooler) with the
    model's own initialiser, from ``seed`` (Zhang et al., 2021: "Revisiting few-sample BERT fine-tuning"), offset
    so that the blocks do not repeat the random numbers the new head was drawn from (:meth:`BaseModel.fresh`).

    transformers 5 marks loaded tensors ``_is_hf_initialized`` and its initialisers skip those, so the marks of
    the re-initialised modules are cleared first.
    """
    layers = layers_of(model)
    fresh_head = {id(get_module(model, path)) for path in family_of(model).new_head}
    modules = [*list(layers.blocks)[-count:], *(m for m in layers.head if id(m) not in fresh_head)]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed + REINIT_SEED_OFFSET)
    try:
        for part in modules:
            for module in part.modules():
                module._is_hf_initialized = False
                for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                    tensor._is_hf_initialized = False
                model._init_weights(module)
    finally:
        torch.random.set_rng_state(state)
