"""What every switchable knob group shares, and the bounds of knobs that have no natural one."""

from __future__ import annotations

from pydantic import ConfigDict

from hft_search.spec._model import SpecModel

MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65_536
MAX_LORA_RANK = 4096
"""Upper bounds of knobs that have no natural one, so that a typo (a missing decimal point, an extra zero)
fails in ``validate`` instead of running for hours; the model check bounds ``lora.r`` by the hidden size."""

MIN_LEARNING_RATE = 1e-9
MAX_LEARNING_RATE = 1.0
"""Bounds of every learning rate (``training.learning_rate``, ``distill.teacher_learning_rate``). AdamW moves
each weight by about the learning rate per step: above 1 a single step wipes out the pretrained weights, and
below 1e-9 a fine-tune of any length changes nothing that float32 can show. Both are typos, not settings."""


class SwitchableGroup(SpecModel):
    """A knob group that a spec switches on and off with ``<group>.enabled`` (every group but ``training``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = False
