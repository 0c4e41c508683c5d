"""One fully resolved configuration of every knob group: what a single trial (or ``train``) runs.

Why built from the registry: its fields are the groups of :data:`~hft_search.spec.GROUPS`, in that order, each
defaulting to its group's defaults, so a new group adds its field here without an edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from hft_search.spec._groups import GROUPS


class _HybridConfigBase(BaseModel):
    """What :class:`HybridConfig` does; its fields, one knob group each, come from :data:`GROUPS`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> HybridConfig:
        """Build from dotted knob values (``{"freeze.layers": 2, ...}``); missing knobs take their defaults."""
        nested: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
        for name, value in values.items():
            group, field = name.split(".", 1)
            nested[group][field] = value
        return cls.model_validate(nested)

    def flat(self) -> dict[str, Any]:
        """The configuration as dotted knob values, the inverse of :meth:`from_flat`."""
        return {f"{group}.{k}": v for group in GROUPS for k, v in getattr(self, group).model_dump().items()}


HybridConfig = create_model(
    "HybridConfig",
    __base__=_HybridConfigBase,
    __module__=__name__,
    __doc__="One fully resolved hybrid fine-tuning configuration: what a single trial (or ``train``) runs.",
    **{group: (model, model()) for group, model in GROUPS.items()},
)
