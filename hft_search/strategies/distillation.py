"""Knowledge distillation: a truncated student learns from a teacher's soft labels and the true labels.

L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + β·CE(z_s, y)   (Hinton et al., 2015)
    + β_h · PKD's hidden-state term (Sun et al., 2019; :class:`DistillationLoss`)

Rows of ``data.unlabeled`` (label ``UNLABELED``) enter the soft-label and hidden-state terms only: their labels
come from the teacher. The student starts from the bottom blocks of the pre-trained model or from blocks spread
over it (:func:`student_blocks`, DistilBERT).

The T² factor keeps the soft-label gradients on the same scale as the hard-label ones when T changes.
The teacher enters only as precomputed logits (a tensor, detached here): the teacher model is never part of
the student's graph, so no gradient can reach it, and the caller may cache its logits per fold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hft_search.data import UNLABELED
from hft_search.exceptions import SpecError, SpecIssue
from hft_search.models import layers_of, select_blocks
from hft_search.spec import DistillConfig, HybridConfig, TrainingConfig
from hft_search.strategies.base import Setup, Strategy


def student_blocks(teacher_layers: int, student_layers: int, init: str) -> list[int]:
    """The teacher's blocks (0-based) a student of ``student_layers`` blocks starts from.

    ``bottom``: the first n (PKD initialises its student from the bottom of the pre-trained teacher).
    ``alternate``: n blocks spread evenly from the first to the last, ``round(i·(N−1)/(n−1))`` (ties to even):
    DistilBERT's initialisation, "one layer out of two" — its extraction script keeps 0, 2, 4, 7, 9, 11 of 12,
    which is this rule; 3 of 6 gives 0, 2, 5.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"a student of {student_layers} blocks cannot come from {teacher_layers} blocks")
    if init == "bottom" or student_layers == teacher_layers:
        return list(range(student_layers))
    if student_layers == 1:
        return [0]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


def hidden_pairs(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student block, teacher block), 0-based, whose outputs the hidden-state loss compares.

    PKD-Skip (Sun et al., 2019): student block i = 1 .. n−1 (1-based) learns teacher block i·N/n, rounded; the
    top block is left out, since the logits loss already matches what the teacher predicts from its top
    (their code: ``full_output[:-1]``, teacher blocks 2, 4, .., 10 of 12 for a 6-block student).
    """
    return [(i - 1, round(i * teacher_layers / student_layers) - 1) for i in range(1, student_layers)]


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the rows that have a label (``data.unlabeled`` rows carry ``UNLABELED``); 0 when
    none of the batch has one."""
    labelled = labels != UNLABELED
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], labels[labelled])


class DistillationLoss:
    """The loss for fixed α, β, T and β_h, called as ``loss(student_logits, labels, teacher_logits, hidden)``.

    ``hidden`` is (student states, teacher states), each [batch, pairs, width]: the pooled outputs of the blocks
    of :func:`hidden_pairs`. The hidden term is PKD's ``patience_loss`` with ``normalize_patience``:
    β_h · mean((s/‖s‖ − t/‖t‖)²) over rows, pairs and width (``F.mse_loss`` of the L2-normalised states).
    """

    def __init__(self, alpha: float, beta: float, temperature: float, hidden_weight: float = 0.0) -> None:
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.hidden_weight = hidden_weight

    @property
    def needs_teacher(self) -> bool:
        return self.alpha > 0 or self.hidden_weight > 0

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                 hidden: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        loss = self.beta * labelled_cross_entropy(logits, labels) if self.beta > 0 else logits.sum() * 0.0
        if self.alpha > 0:
            if teacher_logits is None:
                raise ValueError("distillation with distill.alpha > 0 needs teacher logits for every batch")
            t = self.temperature
            student = F.log_softmax(logits / t, dim=-1)
            teacher = F.log_softmax(teacher_logits.detach().to(logits.dtype) / t, dim=-1)
            soft = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
            loss = loss + self.alpha * t * t * soft
        if self.hidden_weight > 0 and hidden is not None and hidden[0].shape[1] > 0:
            student_states, teacher_states = hidden
            loss = loss + self.hidden_weight * F.mse_loss(F.normalize(student_states.float(), dim=-1),
                                                          F.normalize(teacher_states.detach().float(), dim=-1))
        return loss


class DistillStrategy(Strategy):
    """Keeps ``distill.student_layers`` blocks (:func:`student_blocks`); the loss becomes
    :class:`DistillationLoss`."""

    name = "distill"
    config: DistillConfig

    def apply(self, setup: Setup) -> None:
        wanted = self.config.student_layers
        if wanted is not None:
            available = layers_of(setup.network).num_layers
            if wanted > available:
                raise SpecError([SpecIssue("distill.student_layers",
                                           f"{wanted} exceeds the model's {available} blocks; "
                                           f"choose at most {available}")])
            if wanted < available:
                select_blocks(setup.model, student_blocks(available, wanted, self.config.student_init))
        setup.loss = DistillationLoss(self.config.alpha, self.config.beta, self.config.temperature,
                                      self.config.hidden_weight)


def teacher_config(config: HybridConfig) -> HybridConfig:
    """The teacher's configuration: the full model, every strategy off, trained with the ``distill.teacher_*``
    knobs and the documented defaults of every other training knob.

    Only the teacher knobs shape it, never the student's ``training.*`` values: a study that searches the
    learning rate still distils every trial from one teacher per fold, and ``train`` fits that same teacher
    from the exported spec. Fine-tune it on the fold's training part only (``valid=None``, so not even early
    stopping sees the validation part), then pass ``predict_logits(teacher, train)`` to the student's fine-tune.
    """
    distill = config.distill
    return HybridConfig(training=TrainingConfig(learning_rate=distill.teacher_learning_rate,
                                                epochs=distill.teacher_epochs,
                                                batch_size=distill.teacher_batch_size))
