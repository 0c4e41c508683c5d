"""Train only the most important parameters: a gradient-based score and a quantile cut.

Scores (element-wise, averaged over ``importance.batches`` training batches of gradients g of the mean loss):

* ``grad_norm``      S = |g|        (sensitivity of the loss to the parameter)
* ``fisher``         S = g²         (diagonal empirical Fisher information, from batch gradients)
* ``grad_x_weight``  S = |g · θ|    (first-order estimate of the loss change when θ is removed)

``granularity: tensor`` scores a tensor by the *mean* of its element scores, so a tensor's score does not
grow with its size; ``granularity: element`` uses the element scores as they are.

The cut. Candidates are the parameters still trainable when this strategy runs (after freeze and LoRA),
minus the classification head (always trained) and LoRA adapters (they have no score; always trained).
With n candidate parameters and threshold q, the ⌊q·n⌋ lowest-scoring parameters are frozen: candidates
are ranked by score, ties by position (parameter order, then element order), and frozen from the bottom.
With ``tensor`` granularity whole tensors are frozen until ⌊q·n⌋ parameters are; the tensor straddling that
point is frozen too, so at most (1-q)·n candidates train in both granularities. q is read as the decimal it
prints as (0.29 means 29/100), so the count is exact. The recorded cut is the score of the highest-ranked
frozen unit (nothing trained scores below it); when nothing is frozen it is the lowest candidate score.

Frozen tensors get ``requires_grad=False`` (out of the optimizer, saving its state); partly kept tensors get
a boolean keep-mask in :attr:`Setup.masks` that the optimizer honours exactly (see ``training.optim``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from fractions import Fraction

import torch

from hft_search.models import layers_of
from hft_search.spec import ImportanceConfig
from hft_search.strategies.base import Setup, Strategy

logger = logging.getLogger(__name__)

ELEMENT_SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "grad_norm": lambda grad, param: grad.abs(),
    "fisher": lambda grad, param: grad.square(),
    "grad_x_weight": lambda grad, param: (grad * param).abs(),
}
"""Score kind → element score of one batch gradient ``grad`` of parameter ``param``."""


def frozen_count(threshold: float, candidates: int) -> int:
    """⌊q·n⌋ with q taken as the decimal it prints as, so 0.29 × 100 is 29, not 28."""
    return math.floor(Fraction(repr(threshold)) * candidates)


def keep_elements(scores: torch.Tensor, drop: int) -> tuple[torch.Tensor, float]:
    """Keep-mask over flat scores freezing exactly ``drop`` entries (lowest first, ties by position)."""
    if drop == 0:
        return torch.ones_like(scores, dtype=torch.bool), float(scores.min())
    cut = scores.kthvalue(drop).values
    keep = scores > cut
    ties = (scores == cut).nonzero().flatten()
    surplus = int(keep.logical_not().sum()) - drop  # tied entries beyond the count stay trained, latest first
    if surplus > 0:
        keep[ties[-surplus:]] = True
    return keep, float(cut)


def keep_tensors(scores: torch.Tensor, sizes: torch.Tensor, drop: int) -> tuple[torch.Tensor, float]:
    """Keep-mask over tensors: freeze whole tensors, lowest first, until ``drop`` parameters are frozen."""
    if drop == 0:
        return torch.ones_like(scores, dtype=torch.bool), float(scores.min())
    order = torch.sort(scores, stable=True).indices
    before = torch.cumsum(sizes[order], 0) - sizes[order]  # parameters ranked below each tensor
    frozen = order[before < drop]
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[frozen] = False
    return keep, float(scores[frozen[-1]])


class ImportanceStrategy(Strategy):
    """Freezes or masks the candidates below the ``importance.threshold`` quantile of their scores."""

    name = "importance"
    config: ImportanceConfig

    def candidates(self, setup: Setup) -> dict[str, torch.Tensor]:
        """Still-trainable parameters outside the head that have a score, by name."""
        scores = setup.importance_scores
        if scores is None:
            raise ValueError("the importance strategy needs scores: pass importance_scores "
                             "(from compute_importance)")
        head = layers_of(setup.network).head_parameter_names(setup.network)
        found = {}
        for name, parameter in setup.trainable_parameters().items():
            if name in head or ".lora_" in name:
                continue
            if name not in scores:
                raise ValueError(f"importance scores have no entry for parameter {name!r}: compute them with "
                                 "compute_importance on base.fresh(seed) of the same base model")
            if scores[name].shape != parameter.shape:
                raise ValueError(f"importance score of {name!r} has shape {tuple(scores[name].shape)}, "
                                 f"the parameter {tuple(parameter.shape)}: scores belong to another model")
            found[name] = parameter
        return found

    def apply(self, setup: Setup) -> None:
        candidates = self.candidates(setup)
        if not candidates:
            logger.warning("importance: no trainable candidate left after the other strategies; "
                           "nothing to mask")
            return
        scores = {name: setup.importance_scores[name].float() for name in candidates}
        total = sum(p.numel() for p in candidates.values())
        drop = frozen_count(self.config.threshold, total)
        if self.config.granularity == "tensor":
            self._cut_tensors(setup, candidates, scores, drop)
        else:
            self._cut_elements(setup, candidates, scores, drop)
        logger.info("importance: %s cut at %.4g, %d of %d candidate parameters frozen",
                    self.config.granularity, setup.importance_cut, drop, total)

    @staticmethod
    def _cut_tensors(setup: Setup, candidates: dict[str, torch.Tensor], scores: dict[str, torch.Tensor],
                     drop: int) -> None:
        names = list(candidates)
        means = torch.stack([scores[name].mean(dtype=torch.float64) for name in names])
        sizes = torch.tensor([candidates[name].numel() for name in names], dtype=torch.long)
        keep, setup.importance_cut = keep_tensors(means, sizes, drop)
        for name, kept in zip(names, keep.tolist(), strict=True):
            if not kept:
                candidates[name].requires_grad_(False)

    @staticmethod
    def _cut_elements(setup: Setup, candidates: dict[str, torch.Tensor], scores: dict[str, torch.Tensor],
                      drop: int) -> None:
        names = list(candidates)
        flat = torch.cat([scores[name].flatten() for name in names])
        keep, setup.importance_cut = keep_elements(flat, drop)
        for name, kept in zip(names, keep.split([candidates[n].numel() for n in names]), strict=True):
            parameter = candidates[name]
            if not kept.any():
                parameter.requires_grad_(False)
            elif not kept.all():
                setup.masks[name] = kept.view(parameter.shape).to(parameter.device)
