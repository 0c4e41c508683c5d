"""One fine-tune: a pure function of a base model, a configuration and data (no Optuna, storage or folds).

:func:`fine_tune` builds ``base.fresh(seed)``, applies the enabled strategies, trains with AdamW (linear
warm-up and decay, clipping, bf16 autocast on CUDA), evaluates on ``valid`` after every epoch, stops early
after ``training.patience`` epochs without improvement and restores the best epoch's weights.

Efficiency: the per-step loss stays on the device (one tensor per epoch); the host reads it only every
:data:`CHECK_EVERY` steps to catch a non-finite loss, and once per epoch for the logged mean, so the GPU is
never stalled step by step.

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
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hft_search.data import UNLABELED, TokenizedSplit
from hft_search.exceptions import TrainingDiverged
from hft_search.models import BaseModel, family_of, get_module, layers_of, select_blocks
from hft_search.spec import HybridConfig, TrainingConfig
from hft_search.strategies import Setup, merge, prepare
from hft_search.strategies.distillation import DistillationLoss, hidden_pairs, student_blocks
from hft_search.training.device import autocast, resolve_device
from hft_search.training.importance import compute_importance
from hft_search.training.memory import (
    check_fits,
    estimate_training_memory,
    free_device_memory,
    wants_checkpointing,
)
from hft_search.training.metrics import check_metric, compute_metric
from hft_search.training.optim import (
    build_optimizer,
    effective_learning_rate,
    linear_schedule,
    optimizer_state_bytes,
    rate_scales,
)
from hft_search.training.precision import FrozenBf16
from hft_search.training.states import BlockStates

logger = logging.getLogger(__name__)

CHECK_EVERY = 32
REINIT_SEED_OFFSET = 0x5EED_0000
"""Added to the fit's seed for ``training.reinit_layers`` (see :func:`reinitialise_top`)."""
"""Steps between host reads of the loss (to stop on a non-finite one without syncing every step)."""


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


class EarlyStopping:
    """Tracks the best (highest) score and keeps a CPU copy of the trained tensors of the best epoch.

    Only tensors that train are copied: frozen ones cannot differ between epochs.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_score = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.snapshot: dict[str, torch.Tensor] = {}

    def update(self, epoch: int, score: float, params: Mapping[str, torch.Tensor]) -> bool:
        """Record an epoch's score; True when it improved (a nan score never does)."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            self.snapshot = {name: p.detach().to("cpu", copy=True) for name, p in params.items()}
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    @torch.no_grad()
    def restore(self, params: Mapping[str, torch.Tensor]) -> None:
        for name, saved in self.snapshot.items():
            params[name].copy_(saved)


def set_dropout(model: nn.Module, p: float | None) -> None:
    """Override every dropout probability of the model (attention dropout included); None keeps them."""
    if p is None:
        return
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


EpochCallback = Callable[[int, float], None]
"""Called after each evaluated epoch with ``(epoch, validation score)``; raising from it ends the fine-tune
(the search's multi-fidelity pruning stops a hopeless configuration this way)."""


def initial_model(base: BaseModel, config: HybridConfig, seed: int) -> nn.Module:
    """The model a fine-tune starts from: ``base.fresh(seed)``, the dropout override, the distillation
    student's blocks (``distill.student_init``) and the re-initialised top blocks (``training.reinit_layers``).

    Why one helper: importance scores must describe the very model that is trained. For a truncated student
    that is the student (after truncation, before freeze, LoRA or masks), so the cross-validator scores the
    model this function returns, and :func:`fine_tune` trains it.
    """
    model = base.fresh(seed)
    set_dropout(model, config.training.dropout)
    wanted = config.distill.student_layers
    if config.distill.enabled and wanted is not None and wanted < base.num_layers:
        select_blocks(model, student_blocks(base.num_layers, wanted, config.distill.student_init))
    count = reinit_count(config, layers_of(model).num_layers)
    if count:
        reinitialise_top(model, count, seed)
    return model


def reinit_count(config: HybridConfig, num_layers: int) -> int:
    """How many top blocks ``training.reinit_layers`` re-initialises: never a block the freeze strategy
    freezes (a frozen random block would never learn), so at most the blocks above the frozen ones."""
    frozen = min(config.freeze.layers, num_layers) if config.freeze.enabled else 0
    count = min(config.training.reinit_layers, num_layers - frozen)
    if count < config.training.reinit_layers:
        logger.info("training.reinit_layers=%d: only the %d block(s) above the frozen ones are re-initialised",
                    config.training.reinit_layers, count)
    return count


def reinitialise_top(model: nn.Module, count: int, seed: int) -> None:
    """Re-initialise the top ``count`` blocks and the pretrained part of the head (BERT's pooler) with the
    model's own initialiser, from ``seed`` (Zhang et al., 2021: "Revisiting few-sample BERT fine-tuning"), offset
    so that the blocks do not repeat the random numbers the new head was drawn from (:meth:`BaseModel.fresh`).

    transformers 5 marks loaded tensors ``_is_hf_initialized`` and its initialisers skip those, so the marks of
    the re-initialised modules are cleared first.
    """
    layers = layers_of(model)
    fresh_head = {id(get_module(model, path)) for path in family_of(model).new_head}
    modules = [*list(layers.blocks)[-count:], *(m for m in layers.head if id(m) not in fresh_head)]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed + REINIT_SEED_OFFSET)
    try:
        for part in modules:
            for module in part.modules():
                module._is_hf_initialized = False
                for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                    tensor._is_hf_initialized = False
                model._init_weights(module)
    finally:
        torch.random.set_rng_state(state)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for the block and give the caller's random state back afterwards."""
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def predict_logits(model: nn.Module, split: TokenizedSplit, *, batch_size: int = 64,
                   device: str | torch.device = "auto") -> torch.Tensor:
    """Logits [len(split), num_labels] as CPU float32; ``model`` is left on its device and in its mode."""
    device = resolve_device(device)
    home, was_training = next(model.parameters()).device, model.training
    model.to(device).eval()
    try:
        with torch.inference_mode(), autocast(device):
            outputs = [model(**_inputs(batch, device)).logits for _, batch in split.batches(batch_size)]
    finally:
        model.to(home).train(was_training)
    if not outputs:
        raise ValueError("cannot predict on an empty split")
    return torch.cat(outputs).float().cpu()


def _inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The model inputs of a batch on ``device``; labels stay out (the loss is computed here)."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items() if key != "labels"}


def _check_finite(losses: torch.Tensor, epoch: int, first_step: int) -> None:
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        value = "nan" if math.isnan(float(losses[index])) else "inf"
        raise TrainingDiverged(f"loss became {value} at epoch {epoch} step {first_step + index + 1}")


class _Trainer:
    """Optimizer, schedule, masks and loss of one run; :meth:`epoch` trains one pass over the data."""

    def __init__(self, setup: Setup, config: HybridConfig, device: torch.device, total_steps: int,
                 teacher_logits: torch.Tensor | None, teacher_states: torch.Tensor | None,
                 learning_rate: float) -> None:
        training = config.training
        self.model = setup.model.to(device)
        self.loss = setup.loss
        self.training = training
        self.device = device
        scales = rate_scales(setup.network, training, config.lora.lr_ratio if config.lora.enabled else 1.0)
        self.optimizer, self.masks = build_optimizer(setup.network, setup.masks, training, device, learning_rate,
                                                     scales)
        self.scheduler = linear_schedule(self.optimizer, total_steps, training.warmup_ratio)
        self.trained = [p for p in setup.network.parameters() if p.requires_grad]
        self.teacher = teacher_logits.to(device, torch.float32) if teacher_logits is not None else None
        self.states: BlockStates | None = None
        self.teacher_states = None
        pairs = [] if teacher_states is None else hidden_pairs(layers_of(setup.network).num_layers,
                                                               teacher_states.shape[1])
        if teacher_states is not None and not pairs:
            logger.info("distill.hidden_weight: a 1-block student has no block below its top to compare")
        if pairs:  # only the teacher blocks the student's blocks are compared with
            self.states = BlockStates(setup.network, [student for student, _ in pairs])
            self.teacher_states = teacher_states[:, [teacher for _, teacher in pairs]].to(device)

    def epoch(self, train: TokenizedSplit, generator: torch.Generator, number: int) -> float:
        """One shuffled pass; returns the mean training loss."""
        self.model.train()
        steps = math.ceil(len(train) / self.training.batch_size)
        losses = torch.zeros(steps, device=self.device)
        checked = 0
        for step, (rows, batch) in enumerate(train.batches(self.training.batch_size, shuffle=True,
                                                           generator=generator)):
            losses[step] = self.step(rows, batch)
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                _check_finite(losses[checked:step + 1], number, checked)
                checked = step + 1
        return float(losses.mean())

    def step(self, rows: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["labels"].to(self.device, non_blocking=True)
        batch = _inputs(batch, self.device)
        teacher = self.teacher[rows.to(self.device, non_blocking=True)] if self.teacher is not None else None
        if self.states is not None:
            self.states.mask = batch["attention_mask"]
        with autocast(self.device):
            logits = self.model(**batch).logits
        hidden = None
        if self.states is not None:
            hidden = (self.states.stacked(), self.teacher_states[rows.to(self.device, non_blocking=True)])
            self.states.mask = None
        loss = self.loss(logits.float(), labels, teacher, hidden)
        loss.backward()
        self.masks.zero_grads()
        if self.training.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.trained, self.training.max_grad_norm)
        self.masks.decay()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def state_bytes(self) -> int:
        return optimizer_state_bytes(self.optimizer)

    def memory_estimate_bytes(self) -> int:
        """Parameters and buffers, gradients of trained tensors, optimizer state and masks."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return (sum(t.numel() * t.element_size() for t in tensors)
                + sum(p.numel() * p.element_size() for p in self.trained)
                + self.state_bytes() + sum(m.numel() for m in self.masks.masked))


def _check_inputs(base: BaseModel, config: HybridConfig, train: TokenizedSplit, metric: str,
                  teacher_logits: torch.Tensor | None, teacher_states: torch.Tensor | None) -> None:
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
        trainer = _Trainer(setup, config, device, total_steps, teacher_logits, teacher_states, learning_rate)
        try:
            outcome = _train(trainer, setup, training, train, valid, metric, seed, on_epoch)
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


@dataclass
class _Outcome:
    score: float
    history: list[dict]
    best_epoch: int
    stopped_early: bool
    seconds: float
    probs: torch.Tensor | None


def _train(trainer: _Trainer, setup: Setup, training: TrainingConfig, train: TokenizedSplit,
           valid: TokenizedSplit | None, metric: str, seed: int, on_epoch: EpochCallback | None) -> _Outcome:
    """The epoch loop with evaluation and early stopping (best weights restored at the end)."""
    generator = torch.Generator().manual_seed(seed)
    stopper = EarlyStopping(training.patience)
    history, best_probs = [], None
    trained = setup.trainable_parameters()
    start = time.perf_counter()
    for epoch in range(1, training.epochs + 1):
        epoch_start = time.perf_counter()
        train_loss = trainer.epoch(train, generator, epoch)
        score = math.nan
        if valid is not None:
            logits = predict_logits(setup.model, valid, batch_size=max(64, training.batch_size),
                                    device=trainer.device)
            probs = logits.softmax(-1)
            score = compute_metric(metric, valid.labels, probs)
            if stopper.update(epoch, score, trained):
                best_probs = probs
        history.append({"epoch": epoch, "train_loss": train_loss, "valid_score": score,
                        "seconds": time.perf_counter() - epoch_start})
        if valid is None:
            logger.info("epoch %d: train loss %.4f (no validation split)", epoch, train_loss)
        else:
            logger.info("epoch %d: train loss %.4f, valid %s %.4f", epoch, train_loss, metric, score)
            if on_epoch is not None:
                on_epoch(epoch, score)
        if valid is not None and stopper.should_stop:
            break
    elapsed = time.perf_counter() - start
    if stopper.snapshot:
        stopper.restore(trained)
    score = stopper.best_score if stopper.snapshot else math.nan
    return _Outcome(score, history, stopper.best_epoch or len(history), len(history) < training.epochs,
                    elapsed, best_probs)
