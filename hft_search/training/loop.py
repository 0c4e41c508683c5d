"""One fine-tune: a pure function of a base model, a configuration and data (no Optuna, storage or folds).

:func:`fine_tune` builds ``base.fresh(seed)`` (:mod:`._init`), applies the enabled strategies, trains with AdamW
(linear warm-up and decay, clipping, bf16 autocast on CUDA; :mod:`._trainer`), evaluates on ``valid`` after every
epoch, stops early after ``training.patience`` epochs without improvement and restores the best epoch's weights
(:mod:`._epochs`). This module builds and tears down a run; the names of the private modules are re-exported
here, where callers have always imported them.

Memory on a GPU (:func:`_fit_device`): gradient checkpointing as ``training.gradient_checkpointing`` says,
frozen projections stored in bf16 where that is exact (:mod:`.precision`), and a refusal before anything is
moved to the device when the estimate of weights, gradients, optimizer state and activations exceeds its free
memory (:mod:`.memory`).

Memory (``FineTuneResult.peak_memory_mb``): on CUDA, ``torch.cuda.max_memory_allocated`` over the run. On
other devices, an estimate of the training state: parameters and buffers, gradients of the trained tensors,
optimizer state and element masks (activations excluded). The process RSS high-water mark would be useless
in a worker that runs many trials, since it only ever grows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hft_search.data import UNLABELED, TokenizedSplit
from hft_search.models import BaseModel
from hft_search.spec import HybridConfig, TrainingConfig
from hft_search.strategies import Setup, merge, prepare
from hft_search.strategies.distillation import DistillationLoss
from hft_search.training._epochs import EarlyStopping, EpochCallback, train_epochs
from hft_search.training._init import (
    REINIT_SEED_OFFSET,
    initial_model,
    reinit_count,
    reinitialise_top,
    set_dropout,
)
from hft_search.training._predict import predict_logits
from hft_search.training._trainer import CHECK_EVERY, Trainer
from hft_search.training.device import resolve_device
from hft_search.training.importance import compute_importance
from hft_search.training.memory import (
    check_fits,
    estimate_training_memory,
    free_device_memory,
    wants_checkpointing,
)
from hft_search.training.metrics import check_metric
from hft_search.training.optim import effective_learning_rate
from hft_search.training.precision import FrozenBf16

__all__ = [
    "CHECK_EVERY",
    "REINIT_SEED_OFFSET",
    "EarlyStopping",
    "EpochCallback",
    "FineTuneResult",
    "fine_tune",
    "initial_model",
    "predict_logits",
    "reinit_count",
    "reinitialise_top",
    "seeded",
    "set_dropout",
]


@dataclass
class FineTuneResult:
    """What one fine-tune produced. Counts are exact: element masks count only their kept entries."""

    score: float  # best validation score (nan without validation data)
    history: list[dict]  # per epoch: epoch, train_loss, valid_score, seconds
    best_epoch: int  # 1-based
    stopped_early: bool
    trainable_params: int
    total_params: int
    trainable_fraction: float
    importance_cut: float | None  # absolute score at the importance quantile
    train_time_s: float  # the epoch loop: training and per-epoch evaluation
    peak_memory_mb: float  # see the module docstring
    model: nn.Module  # trained, best weights, eval mode, on CPU; LoRA merged when asked
    valid_probs: torch.Tensor | None  # softmax probabilities on `valid` from the best weights
    optimizer_state_bytes: int = 0
    gradient_checkpointing: bool = False  # training.gradient_checkpointing as resolved for this model
    model_params: int = 0  # parameters of the model as deployed: the (truncated) student, without adapters
    learning_rate: float = math.nan  # the peak rate it trained at (see optim.effective_learning_rate)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for the block and give the caller's random state back afterwards."""
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def _check_inputs(base: BaseModel, config: HybridConfig, train: TokenizedSplit, metric: str,
                  teacher_logits: torch.Tensor | None, teacher_states: torch.Tensor | None) -> None:
    """Refuse inputs that would fail, or silently mistrain, only after the model is built and moved."""
    check_metric(metric)
    if len(train) == 0:
        raise ValueError("cannot fine-tune on an empty training split")
    distill = config.distill
    if distill.enabled and distill.alpha > 0 and teacher_logits is None:
        raise ValueError(
            "distillation needs teacher logits: fine-tune the teacher with "
            "fine_tune(base, teacher_config(config), train, None) and pass "
            "teacher_logits=predict_logits(result.model, train)")
    if distill.enabled and distill.hidden_weight > 0 and teacher_states is None:
        raise ValueError("distill.hidden_weight > 0 needs the teacher's pooled block states: pass "
                         "teacher_states=predict_outputs(teacher, train)[1]")
    if teacher_logits is not None and tuple(teacher_logits.shape) != (len(train), base.num_labels):
        raise ValueError(f"teacher_logits has shape {tuple(teacher_logits.shape)}; expected "
                         f"({len(train)}, {base.num_labels}): one row per training row, in the same order")
    width = getattr(base.template.config, "hidden_size", None)
    if teacher_states is not None and (teacher_states.ndim != 3 or teacher_states.shape[0] != len(train)
                                       or teacher_states.shape[2] != width):
        raise ValueError(f"distill.hidden_weight: the teacher's block states have shape "
                         f"{tuple(teacher_states.shape)}; the student needs ({len(train)}, blocks, {width}): one row "
                         "per training row and the student's width (a teacher checkpoint of another width cannot "
                         "teach hidden states; set distill.hidden_weight: 0)")


def _fit_device(setup: Setup, training: TrainingConfig, train: TokenizedSplit,
                device: torch.device) -> tuple[bool, FrozenBf16]:
    """Checkpointing on or off, frozen projections in bf16 on CUDA, then refuse what cannot fit the device.

    Runs while the model is still on the CPU, so a refused configuration never touches the device.
    """
    network = setup.network
    checkpointing = wants_checkpointing(training.gradient_checkpointing, network)
    if checkpointing:
        network.activation_checkpointing_enable()
    frozen = FrozenBf16.store(network) if device.type == "cuda" else FrozenBf16()
    estimate = estimate_training_memory(network, setup.masks, batch_size=min(training.batch_size, len(train)),
                                        sequence_length=int(train.input_ids.shape[1]),
                                        bf16=device.type == "cuda", checkpointing=checkpointing)
    check_fits(estimate, free_device_memory(device), device)
    return checkpointing, frozen


def fine_tune(
    base: BaseModel,
    config: HybridConfig,
    train: TokenizedSplit,
    valid: TokenizedSplit | None,
    *,
    metric: str = "accuracy",
    seed: int = 0,
    device: str | torch.device = "auto",
    teacher_logits: torch.Tensor | None = None,
    teacher_states: torch.Tensor | None = None,
    importance_scores: Mapping[str, torch.Tensor] | None = None,
    merge_lora: bool = False,
    on_epoch: EpochCallback | None = None,
    schedule_epochs: int | None = None,
) -> FineTuneResult:
    """Fine-tune :func:`initial_model` under ``config`` on ``train``; score and early-stop on ``valid``.

    ``teacher_logits`` ([len(train), num_labels], row-aligned with ``train``) are required when distillation
    has ``alpha > 0``, ``teacher_states`` ([len(train), teacher blocks, width], the teacher's pooled block
    outputs, :func:`~hft_search.training.states.predict_outputs`) when ``distill.hidden_weight > 0``. Rows
    labelled ``UNLABELED`` (``data.unlabeled``) are learnt from the teacher only.
    ``importance_scores`` from :func:`compute_importance` on ``initial_model(base, config,
    seed)`` are computed here when not given. Without ``valid`` every epoch runs and the score is nan.
    ``on_epoch`` sees each epoch's validation score (see :data:`EpochCallback`).
    ``schedule_epochs`` (default ``training.epochs``) is the length of the run the learning-rate schedule
    (warm-up and linear decay) is laid out for; the fine-tune stops after ``training.epochs`` of them. The final
    fit of an exported configuration passes the searched epochs here: its folds were scored at their best epoch
    of a longer run, whose schedule it must follow to train what was scored.
    A non-finite loss raises :class:`~hft_search.exceptions.TrainingDiverged`; a configuration that cannot fit the
    device raises :class:`~hft_search.exceptions.DeviceMemoryError` before training; CUDA out-of-memory
    propagates.
    """
    device = resolve_device(device)
    _check_inputs(base, config, train, metric, teacher_logits, teacher_states)
    training = config.training
    schedule_epochs = training.epochs if schedule_epochs is None else schedule_epochs
    if schedule_epochs < training.epochs:
        raise ValueError(f"schedule_epochs ({schedule_epochs}) cannot be fewer than training.epochs "
                         f"({training.epochs}): the schedule would reach 0 before the run ends")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with seeded(seed, device):
        model = initial_model(base, config, seed)
        model_params = sum(p.numel() for p in model.parameters())
        if config.importance.enabled and importance_scores is None:
            labelled = train.subset(torch.nonzero(train.labels != UNLABELED).flatten())  # not data.unlabeled
            importance_scores = compute_importance(model, labelled, config.importance,
                                                   batch_size=training.batch_size, device=device, seed=seed)
        setup = prepare(model, config, importance_scores=importance_scores)
        if isinstance(setup.loss, DistillationLoss) and setup.loss.alpha == 0:
            teacher_logits = None  # alpha = 0: the soft-label term is off, its logits need no device copy
        if not (isinstance(setup.loss, DistillationLoss) and setup.loss.hidden_weight > 0):
            teacher_states = None
        checkpointing, frozen = _fit_device(setup, training, train, device)
        total_steps = schedule_epochs * math.ceil(len(train) / training.batch_size)
        trainable, total = setup.trainable_count(), setup.total_count()
        # nothing trainable: build_optimizer raises the error that says so
        learning_rate = effective_learning_rate(training, trainable / total) if trainable else training.learning_rate
        trainer = Trainer(setup, config, device, total_steps, teacher_logits, teacher_states, learning_rate)
        try:
            outcome = train_epochs(trainer, setup, training, train, valid, metric, seed, on_epoch)
        finally:
            if trainer.states is not None:
                trainer.states.close()
    peak_bytes = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                  else trainer.memory_estimate_bytes())
    state_bytes = trainer.state_bytes()
    model = setup.model.eval().to("cpu")
    frozen.restore()
    if checkpointing:  # hand back a plain model: no recomputation, no input-gradient hook
        setup.network.activation_checkpointing_disable()
        setup.network.disable_input_require_grads()
    result = FineTuneResult(
        score=outcome.score, history=outcome.history, best_epoch=outcome.best_epoch,
        stopped_early=outcome.stopped_early, trainable_params=trainable, total_params=total,
        trainable_fraction=trainable / total, importance_cut=setup.importance_cut,
        train_time_s=outcome.seconds, peak_memory_mb=peak_bytes / 2**20,
        model=merge(model) if merge_lora else model, valid_probs=outcome.probs,
        optimizer_state_bytes=state_bytes, gradient_checkpointing=checkpointing, model_params=model_params,
        learning_rate=learning_rate)
    del trainer, setup, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result
