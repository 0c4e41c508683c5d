"""Knowledge distillation: a truncated student learns from a teacher's soft labels and the true labels.

L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + β·CE(z_s, y)   (Hinton et al., 2015)

The T² factor keeps the soft-label gradients on the same scale as the hard-label ones when T changes.
The teacher enters only as precomputed logits (a tensor, detached here): the teacher model is never part of
the student's graph, so no gradient can reach it, and the caller may cache its logits per fold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hft_search.exceptions import SpecError, SpecIssue
from hft_search.models import layers_of, truncate
from hft_search.spec import DistillConfig, HybridConfig, TrainingConfig
from hft_search.strategies.base import Setup, Strategy


class DistillationLoss:
    """The loss for fixed α, β and T, called as ``loss(student_logits, labels, teacher_logits)``."""

    def __init__(self, alpha: float, beta: float, temperature: float) -> None:
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature

    @property
    def needs_teacher(self) -> bool:
        return self.alpha > 0

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor,
                 teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.beta * F.cross_entropy(logits, labels)
        if not self.needs_teacher:
            return loss
        if teacher_logits is None:
            raise ValueError("distillation with distill.alpha > 0 needs teacher logits for every batch")
        t = self.temperature
        student = F.log_softmax(logits / t, dim=-1)
        teacher = F.log_softmax(teacher_logits.detach().to(logits.dtype) / t, dim=-1)
        soft = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
        return loss + self.alpha * t * t * soft


class DistillStrategy(Strategy):
    """Truncates to ``distill.student_layers`` blocks; the loss becomes :class:`DistillationLoss`."""

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
                truncate(setup.model, wanted)
        setup.loss = DistillationLoss(self.config.alpha, self.config.beta, self.config.temperature)


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
