"""The ``training`` knob group: the fine-tune's own settings, on in every configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from hft_search.spec._groups._base import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LEARNING_RATE, MIN_LEARNING_RATE
from hft_search.spec._model import SpecModel


class TrainingConfig(SpecModel):
    """The usual training settings. Always on, so it has no ``enabled`` switch."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    learning_rate: float = Field(5e-5, ge=MIN_LEARNING_RATE, le=MAX_LEARNING_RATE,
                                 description="peak AdamW learning rate, in [1e-9, 1]")
    weight_decay: float = Field(0.01, ge=0.0, description="decoupled weight decay (not on biases and LayerNorm)")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of steps of linear warm-up")
    epochs: int = Field(3, ge=1, le=MAX_EPOCHS, description="maximum epochs")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE, description="training batch size")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="override the model's dropout (None: keep)")
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient clipping norm (0: no clipping)")
    patience: int = Field(2, ge=1, description="epochs without improvement before early stopping")
    max_lr_multiplier: float = Field(
        10.0, ge=1.0, description="scale the learning rate by min(this, 1 / trainable fraction): configurations "
        "that train few parameters get a larger rate (1: every configuration trains at learning_rate)"
    )
    layer_lr_decay: float = Field(
        1.0, gt=0.0, le=1.0, description="layer-wise rate decay: the block k below the top trains at decay^k of "
        "the rate, the embeddings at decay^blocks; head and top block at the rate (1: off)")
    reinit_layers: int = Field(0, ge=0, description="re-initialise the top n trainable blocks (and a pretrained "
                               "pooler) before training, seeded")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="recompute block activations in backward to save memory (auto: on for models of "
        "1e9 parameters or more, off below)")
