"""The ``lora`` knob group: LoRA adapters (and their rsLoRA, DoRA and LoRA+ variants) through ``peft``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hft_search.spec._groups._base import MAX_LORA_RANK, SwitchableGroup


class LoraConfig(SwitchableGroup):
    """LoRA adapters (through ``peft``) on the parameters left frozen by the other strategies."""

    r: int = Field(8, ge=1, le=MAX_LORA_RANK, description="adapter rank (at most the model's hidden size)")
    alpha: float = Field(16.0, gt=0.0, description="adapter scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter input")
    targets: list[str] | Literal["all-linear"] | None = Field(
        None, description="module names to adapt, or all-linear: every linear projection of a block (None: the "
        "architecture's default)")
    variant: Literal["lora", "rslora", "dora"] = Field(
        "lora", description="plain LoRA, rsLoRA (scale alpha/sqrt(r)) or DoRA (magnitude and direction), through "
        "peft's use_rslora / use_dora")
    lr_ratio: float = Field(1.0, ge=1.0, description="LoRA+: the B matrices train at this times the rate of A (1: off)")
