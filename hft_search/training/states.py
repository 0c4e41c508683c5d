"""Pooled block outputs: what the hidden-state term of distillation compares, for the teacher and the student.

Why hooks on the blocks rather than ``output_hidden_states=True``: what each family puts into ``hidden_states``
differs (a decoder's last entry is after its final norm, a BERT's is the last block's output), and a peft
wrapper passes the flag on differently; a forward hook on block *i* sees exactly the output of block *i* in every
family. Each output is pooled at once (:func:`hft_search.pooling.pool_states`, with the model's own pooling), so
only [batch, width] per block is kept, never the token states.

Why the teacher's states are pooled and cached per fold: PKD compares the states the classifier reads ([CLS] in
their code), and a pooled state per block and row is small: rows × blocks × width × 2 bytes (fp16), e.g. 1,334
training rows of a 3-fold SST-2 study at 2,000 rows × 6 MiniLM blocks × 384 = 6.1 MB per fold, and the whole
SST-2 training split (67,349 rows) 310 MB. Entries above :data:`MAX_STATE_BYTES` are not stored (see ``cv``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hft_search.data import TokenizedSplit
from hft_search.models import layers_of, pooling_of
from hft_search.pooling import pool_states
from hft_search.training.device import autocast, resolve_device

MAX_STATE_BYTES = 1 << 30
"""Largest cache entry of teacher states (1 GiB): beyond it the states are not kept, and a hidden-state loss
fails with a message that says how to shrink it."""


class BlockStates:
    """Forward hooks that keep the pooled output of the chosen blocks of ``model`` during each forward pass.

    Set :attr:`mask` to the batch's attention mask before the forward pass; :meth:`stacked` then returns
    [batch, len(blocks), width]. Passes while :attr:`mask` is None are not collected. :meth:`close` removes the
    hooks.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[int], pooling: str | None = None) -> None:
        self.blocks = list(blocks)
        self.pooling = pooling or pooling_of(model)
        self.mask: torch.Tensor | None = None
        self.states: dict[int, torch.Tensor] = {}
        layers = layers_of(model)
        self.handles = [layers.blocks[i].register_forward_hook(self._hook(i)) for i in self.blocks]

    def _hook(self, index: int):  # noqa: ANN202 - a forward hook
        def keep(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
            if self.mask is None:  # a pass that is not collected (evaluation, a checkpointed recomputation)
                return
            hidden = output[0] if isinstance(output, tuple) else output
            self.states[index] = pool_states(hidden, self.mask, self.pooling)

        return keep

    def stacked(self) -> torch.Tensor:
        return torch.stack([self.states[i] for i in self.blocks], dim=1)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def predict_outputs(model: nn.Module, split: TokenizedSplit, *, batch_size: int = 64,
                    device: str | torch.device = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [rows, labels] (float32) and the pooled output of every block [rows, blocks, width] (float16),
    both on the CPU: the teacher's outputs that the student learns from."""
    device = resolve_device(device)
    home, was_training = next(model.parameters()).device, model.training
    states = BlockStates(model, range(layers_of(model).num_layers))
    logits, pooled = [], []
    model.to(device).eval()
    try:
        with torch.inference_mode(), autocast(device):
            for _, batch in split.batches(batch_size):
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                states.mask = inputs["attention_mask"]
                logits.append(model(**inputs).logits.float().cpu())
                pooled.append(states.stacked().to("cpu", torch.float16))
    finally:
        states.close()
        model.to(home).train(was_training)
    return torch.cat(logits), torch.cat(pooled)
