"""Freeze the embeddings and the bottom ``freeze.layers`` transformer blocks (encoder or decoder).

Frozen tensors get ``requires_grad=False``: autograd computes no gradient for them and the optimizer never
sees them, so they stay bit-identical and cost no optimizer state.
"""

from __future__ import annotations

import logging

from torch import nn

from hft_search.models import layers_of
from hft_search.spec import FreezeConfig
from hft_search.strategies.base import Setup, Strategy

logger = logging.getLogger(__name__)


def freeze_module(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


class FreezeStrategy(Strategy):
    """``freeze.layers`` bottom blocks (and the embeddings when ``freeze.embeddings``) stop training."""

    name = "freeze"
    config: FreezeConfig

    def apply(self, setup: Setup) -> None:
        layers = layers_of(setup.network)
        count = min(self.config.layers, layers.num_layers)
        if count < self.config.layers:
            # A distilled student may have fewer blocks than freeze.layers: "the bottom k" then means all.
            logger.info("freeze.layers=%d but the model has %d blocks: freezing all of them",
                        self.config.layers, layers.num_layers)
        if self.config.embeddings:
            for embedding in layers.embeddings:
                freeze_module(embedding)
        for block in list(layers.blocks)[:count]:
            freeze_module(block)
