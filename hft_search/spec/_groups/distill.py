"""The ``distill`` knob group: knowledge distillation from a fine-tuned teacher into a (truncated) student."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hft_search.spec._groups._base import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_LEARNING_RATE,
    MIN_LEARNING_RATE,
    SwitchableGroup,
)


class DistillConfig(SwitchableGroup):
    """Knowledge distillation: L = α·T²·KL(teacher ‖ student at temperature T) + β·CE(student, y)."""

    alpha: float = Field(0.5, ge=0.0, description="weight of the soft-label (KL) term")
    beta: float = Field(0.5, ge=0.0, description="weight of the hard-label (CE) term")
    temperature: float = Field(2.0, gt=0.0, description="softmax temperature T")
    student_layers: int | None = Field(
        None, ge=1, description="truncate the student to its bottom n blocks (None: as many as the base model)"
    )
    teacher: str | None = Field(None, description="path of a fine-tuned teacher checkpoint (None: fine-tune one)")
    # The teacher fine-tune's own settings. They are knobs of their own, not the student's training.* values,
    # so that the teacher a trial distilled from is pinned by `export` and fitted again, unchanged, by `train`.
    teacher_learning_rate: float = Field(5e-5, ge=MIN_LEARNING_RATE, le=MAX_LEARNING_RATE,
                                         description="peak learning rate of the teacher fine-tune")
    teacher_epochs: int = Field(3, ge=1, le=MAX_EPOCHS, description="epochs of the teacher fine-tune (all of them)")
    teacher_batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE, description="batch size of the teacher fine-tune")
    teacher_seed: int | None = Field(
        None, description="seed of the teacher fine-tune (None: the fit's own seed, per fold in the search)"
    )
    hidden_weight: float = Field(
        0.0, ge=0.0, description="β_h of PKD's hidden-state loss: MSE of the L2-normalised pooled states of student "
        "block i and teacher block round(i·N_t/N_s), blocks below the top (0: off)")
    student_init: Literal["bottom", "alternate"] = Field(
        "bottom", description="student blocks from the bottom n blocks, or n blocks spread from the first to the "
        "last (DistilBERT: 0,2,4,7,9,11 of 12)")
