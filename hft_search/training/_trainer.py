"""One run's optimizer, schedule, masks and loss, and the training step and pass built on them.

Apart from the epoch loop (:mod:`._epochs`) because what happens inside a step (distillation targets, hidden
states, mask upkeep, clipping, the non-finite check) is a different concern from when to evaluate or stop.

Efficiency: the per-step loss stays on the device (one tensor per epoch); the host reads it only every
:data:`CHECK_EVERY` steps to catch a non-finite loss, and once per epoch for the logged mean, so the GPU is
never stalled step by step.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from hft_search.data import TokenizedSplit
from hft_search.exceptions import TrainingDiverged
from hft_search.models import layers_of
from hft_search.spec import HybridConfig
from hft_search.strategies import Setup
from hft_search.strategies.distillation import hidden_pairs
from hft_search.training._predict import model_inputs
from hft_search.training.device import autocast
from hft_search.training.optim import build_optimizer, linear_schedule, optimizer_state_bytes, rate_scales
from hft_search.training.states import BlockStates

logger = logging.getLogger("hft_search.training.loop")  # the name users filter the engine's messages on

CHECK_EVERY = 32
"""Steps between host reads of the loss (to stop on a non-finite one without syncing every step)."""


def check_finite(losses: torch.Tensor, epoch: int, first_step: int) -> None:
    """Raise :class:`TrainingDiverged` naming the first non-finite loss among ``losses``."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        value = "nan" if math.isnan(float(losses[index])) else "inf"
        raise TrainingDiverged(f"loss became {value} at epoch {epoch} step {first_step + index + 1}")


class Trainer:
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
                check_finite(losses[checked:step + 1], number, checked)
                checked = step + 1
        return float(losses.mean())

    def step(self, rows: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimizer step on a batch; returns the loss still on the device (no host sync)."""
        labels = batch["labels"].to(self.device, non_blocking=True)
        batch = model_inputs(batch, self.device)
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
        """The optimizer state's size, reported in the result."""
        return optimizer_state_bytes(self.optimizer)

    def memory_estimate_bytes(self) -> int:
        """Parameters and buffers, gradients of trained tensors, optimizer state and masks."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return (sum(t.numel() * t.element_size() for t in tensors)
                + sum(p.numel() * p.element_size() for p in self.trained)
                + self.state_bytes() + sum(m.numel() for m in self.masks.masked))
