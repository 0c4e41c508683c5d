"""LoRA adapters through ``peft`` on the part of the encoder that is left frozen.

Which modules get adapters:

* without the freeze strategy, LoRA is classic LoRA: every parameter but the classification head is frozen
  and every target module of every block gets an adapter, so only adapters and head train;
* with the freeze strategy, the adapters go on the target modules of the *frozen* blocks only, and the blocks
  above keep training in full (or under the importance mask). ``freeze.layers = 0`` then leaves nothing to
  adapt and LoRA adds no adapter (logged).

Targets are given to peft as full module names, so the choice does not depend on peft's layer-pattern
heuristics and works for every family in :mod:`hft_search.families`. ``lora.targets`` names module suffixes
inside a block (``query``, ``output.dense``, ``q_proj``, ...); the default is the family's
:attr:`~hft_search.families.Family.lora_targets`: the attention query/key/value projections of an encoder, every
attention and MLP projection of a decoder LLM (``q_proj`` ... ``down_proj``; ``c_attn``, ``c_proj``, ``c_fc``
for GPT-2), as LoRA is usually run on them; ``all-linear`` names every linear projection of a block (peft's
``all-linear`` without the head, which trains in full here).

Variants are peft's own options: ``rslora`` (``use_rslora``: scale alpha/√r instead of alpha/r, Kalajdzievski
2023), ``dora`` (``use_dora``: weight-decomposed LoRA, Liu et al. 2024). ``lora.lr_ratio`` (LoRA+, Hayou et al.
2024) is a learning rate of the optimizer, see ``training.optim``. Every variant merges into plain weights.
"""

from __future__ import annotations

import logging

from torch import nn

from hft_search.exceptions import SpecError, SpecIssue
from hft_search.families import ModelLayers, block_linear_names, layers_of
from hft_search.spec import HybridConfig, LoraConfig
from hft_search.strategies.base import Setup, Strategy

logger = logging.getLogger(__name__)


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


class LoraStrategy(Strategy):
    """Adds peft LoRA adapters (``lora.r``, ``lora.alpha``, ``lora.dropout``, ``lora.targets``, ``lora.variant``)."""

    name = "lora"
    config: LoraConfig

    def __init__(self, config: LoraConfig, *, frozen_blocks_only: bool = False) -> None:
        super().__init__(config)
        self.frozen_blocks_only = frozen_blocks_only

    @classmethod
    def from_config(cls, config: HybridConfig) -> LoraStrategy:
        return cls(config.lora, frozen_blocks_only=config.freeze.enabled)

    def target_modules(self, layers: ModelLayers) -> list[str]:
        """Full names of the frozen modules to adapt; rejects targets that match no module at all."""
        if self.config.targets == "all-linear":  # peft's all-linear, less the head (it trains in full here)
            suffixes = block_linear_names(layers)
        else:
            suffixes = self.config.targets or list(layers.family.lora_targets)
        named = [(f"{layers.family.blocks}.{i}.{name}", module)
                 for i, block in enumerate(layers.blocks) for name, module in block.named_modules() if name]
        for suffix in suffixes:
            if not any(_matches(name, suffix) for name, _ in named):
                raise SpecError([SpecIssue("lora.targets",
                                           f"{suffix!r} matches no module of the {layers.family.label} blocks; "
                                           f"projections there are: {', '.join(block_linear_names(layers))}")])
        return [name for name, module in named
                if any(_matches(name, s) for s in suffixes) and _frozen(module)]

    def apply(self, setup: Setup) -> None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        if setup.network is not setup.model:
            raise ValueError("the model already carries peft adapters; apply LoRA once")
        network = setup.model
        layers = layers_of(network)
        if not self.frozen_blocks_only:
            head = {id(p) for module in layers.head for p in module.parameters()}
            for parameter in network.parameters():
                if id(parameter) not in head:
                    parameter.requires_grad_(False)
        targets = self.target_modules(layers)
        if not targets:
            logger.warning("lora: no frozen block to adapt (freeze.layers = 0); no adapter added")
            return
        # peft marks everything but the adapters frozen; what the other strategies left trainable trains on.
        trainable = [p for p in network.parameters() if p.requires_grad]
        # GPT-2's Conv1D stores its weight transposed (in × out); peft must be told, or it warns and guesses.
        transposed = any(type(network.get_submodule(name)).__name__ == "Conv1D" for name in targets)
        peft_config = PeftLoraConfig(r=self.config.r, lora_alpha=self.config.alpha,
                                     lora_dropout=self.config.dropout, target_modules=targets, bias="none",
                                     fan_in_fan_out=transposed, use_rslora=self.config.variant == "rslora",
                                     use_dora=self.config.variant == "dora")
        setup.model = get_peft_model(network, peft_config)
        for parameter in trainable:
            parameter.requires_grad_(True)
        logger.debug("lora: %d adapted modules", len(targets))


def merge(model: nn.Module) -> nn.Module:
    """The plain model with the LoRA updates merged into its weights (itself when it has no adapters)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

