"""The ``importance`` knob group: train only the parameters whose importance clears a quantile."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hft_search.spec._groups._base import SwitchableGroup


class ImportanceConfig(SwitchableGroup):
    """Train only parameters whose gradient-based importance is above the ``threshold`` quantile."""

    threshold: float = Field(0.5, ge=0.0, lt=1.0, description="quantile q in [0, 1) of the importance cut")
    score: Literal["grad_norm", "fisher", "grad_x_weight"] = Field("grad_norm", description="importance score")
    granularity: Literal["tensor", "element"] = Field("tensor", description="whole tensors or single elements")
    batches: int = Field(4, ge=1, le=10_000, description="training batches the scores are averaged over")
