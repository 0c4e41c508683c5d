"""The knob groups: one config model per strategy, one field per knob, and the registry that lists them.

Each group's model lives in a module of its own (PEFT keeps one config per method the same way): its fields are
the group's knobs, with their one documented default and their valid range as field constraints. :data:`GROUPS`
is the one place that lists the groups; the valid knob names, the switchable groups and the fields of
:class:`~hft_search.spec.HybridConfig` are all read from it, so a new group is one module here and one line in
:data:`GROUPS`.
"""

from __future__ import annotations

from typing import Any

from hft_search.spec._groups._base import SwitchableGroup
from hft_search.spec._groups.distill import DistillConfig
from hft_search.spec._groups.freeze import FreezeConfig
from hft_search.spec._groups.importance import ImportanceConfig
from hft_search.spec._groups.lora import LoraConfig
from hft_search.spec._groups.training import TrainingConfig
from hft_search.spec._model import SpecModel

GROUPS: dict[str, type[SpecModel]] = {
    "freeze": FreezeConfig,
    "importance": ImportanceConfig,
    "distill": DistillConfig,
    "lora": LoraConfig,
    "training": TrainingConfig,
}
"""Knob groups in the order their strategies are applied (freeze → importance, LoRA; distillation changes the loss)."""

SWITCHABLE_GROUPS: tuple[str, ...] = tuple(
    group for group, model in GROUPS.items() if issubclass(model, SwitchableGroup)
)
"""Groups a spec switches with ``<group>.enabled``, in :data:`GROUPS` order (``training`` is always on)."""


def knob_names() -> list[str]:
    """Every valid dotted knob name, ``group.field``."""
    return [f"{group}.{field}" for group, model in GROUPS.items() for field in model.model_fields]


def knob_default(name: str) -> Any:
    """The documented default of a knob."""
    group, field = name.split(".", 1)
    return GROUPS[group].model_fields[field].default
