"""The epoch loop: train, evaluate on the validation split, stop early and restore the best epoch's weights.

Apart from :mod:`._trainer` (what one step does) and from :mod:`.loop` (building and tearing down a run):
this is the only place that decides when a fine-tune ends.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from hft_search.data import TokenizedSplit
from hft_search.spec import TrainingConfig
from hft_search.strategies import Setup
from hft_search.training._predict import predict_logits
from hft_search.training._trainer import Trainer
from hft_search.training.metrics import compute_metric

logger = logging.getLogger("hft_search.training.loop")  # the name users filter the engine's messages on

EpochCallback = Callable[[int, float], None]
"""Called after each evaluated epoch with ``(epoch, validation score)``; raising from it ends the fine-tune
(the search's multi-fidelity pruning stops a hopeless configuration this way)."""


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
        """True once ``patience`` epochs in a row brought no improvement."""
        return self.bad_epochs >= self.patience

    @torch.no_grad()
    def restore(self, params: Mapping[str, torch.Tensor]) -> None:
        """Copy the best epoch's tensors back into the model."""
        for name, saved in self.snapshot.items():
            params[name].copy_(saved)


@dataclass
class Outcome:
    """What the epoch loop hands back to :func:`~hft_search.training.loop.fine_tune` for its result."""

    score: float
    history: list[dict]
    best_epoch: int
    stopped_early: bool
    seconds: float
    probs: torch.Tensor | None


def train_epochs(trainer: Trainer, setup: Setup, training: TrainingConfig, train: TokenizedSplit,
                 valid: TokenizedSplit | None, metric: str, seed: int, on_epoch: EpochCallback | None) -> Outcome:
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
    return Outcome(score, history, stopper.best_epoch or len(history), len(history) < training.epochs,
                   elapsed, best_probs)
