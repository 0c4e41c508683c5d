"""Inference with a (trained) model: logits on a split, and a batch's inputs on the device.

Shared by the epoch loop's evaluation, the training step and the export/predict commands, so it lives apart
from both the loop and the trainer.
"""

from __future__ import annotations

import torch
from torch import nn

from hft_search.data import TokenizedSplit
from hft_search.training.device import autocast, resolve_device


def predict_logits(model: nn.Module, split: TokenizedSplit, *, batch_size: int = 64,
                   device: str | torch.device = "auto") -> torch.Tensor:
    """Logits [len(split), num_labels] as CPU float32; ``model`` is left on its device and in its mode."""
    device = resolve_device(device)
    home, was_training = next(model.parameters()).device, model.training
    model.to(device).eval()
    try:
        with torch.inference_mode(), autocast(device):
            outputs = [model(**model_inputs(batch, device)).logits for _, batch in split.batches(batch_size)]
    finally:
        model.to(home).train(was_training)
    if not outputs:
        raise ValueError("cannot predict on an empty split")
    return torch.cat(outputs).float().cpu()


def model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The model inputs of a batch on ``device``; labels stay out (the loss is computed by the caller)."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items() if key != "labels"}
