"""Importance scores of every parameter, from gradients on a few training batches.

The scores feed :class:`hft_search.strategies.ImportanceStrategy`. They depend only on the model, the
training rows, the score kind, the number of batches, the batch size and the seed, so a caller can compute
them once per fold on ``base.fresh(seed)`` and cache them.

The model runs in eval mode (no dropout) in fp32, so the scores are deterministic; batches are the first
``importance.batches`` of a shuffle seeded by ``seed``; the loss is the plain cross-entropy, the mean over
each batch. Element scores are averaged over the batches (see ``strategies.importance`` for the formulas).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from hft_search.data import TokenizedSplit
from hft_search.spec import ImportanceConfig
from hft_search.strategies import ELEMENT_SCORES
from hft_search.training.device import resolve_device


def importance_batches(train: TokenizedSplit, batch_size: int, count: int, seed: int):  # noqa: ANN201 - iterator
    """The ``(row indices, batch)`` pairs the scores are computed on."""
    generator = torch.Generator().manual_seed(seed)
    return itertools.islice(train.batches(batch_size, shuffle=True, generator=generator), count)


def compute_importance(model: nn.Module, train: TokenizedSplit, config: ImportanceConfig, *, batch_size: int,
                       device: str | torch.device = "auto", seed: int = 0) -> dict[str, torch.Tensor]:
    """Element-wise importance of every trainable parameter of ``model``: name → CPU float32 tensor.

    ``model`` is left as it was (same device, same train/eval mode, no gradients kept).
    """
    device = resolve_device(device)
    score = ELEMENT_SCORES[config.score]
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    home, was_training = next(model.parameters()).device, model.training
    model.to(device).eval()
    totals = {name: torch.zeros_like(p) for name, p in params.items()}
    seen = 0
    try:
        for _, batch in importance_batches(train, batch_size, config.batches, seed):
            batch = {key: value.to(device) for key, value in batch.items()}
            labels = batch.pop("labels")
            loss = F.cross_entropy(model(**batch).logits.float(), labels)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, param), grad in zip(params.items(), grads, strict=True):
                if grad is not None:
                    totals[name].add_(score(grad, param.detach()))
            seen += 1
    finally:
        model.to(home).train(was_training)
    if seen == 0:
        raise ValueError("importance scores need at least one training row")
    return {name: (total / seen).float().cpu() for name, total in totals.items()}
