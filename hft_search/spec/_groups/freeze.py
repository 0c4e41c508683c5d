"""The ``freeze`` knob group: frozen embeddings and bottom blocks."""

from __future__ import annotations

from pydantic import Field

from hft_search.spec._groups._base import SwitchableGroup


class FreezeConfig(SwitchableGroup):
    """Freeze the embeddings and the bottom ``layers`` encoder blocks (no gradient, not in the optimizer)."""

    layers: int = Field(0, ge=0, description="number of bottom encoder blocks to freeze")
    embeddings: bool = Field(True, description="freeze the embedding layer too")
