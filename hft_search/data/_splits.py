"""The row containers the rest of hft_search passes around, and tokenization between them.

A :class:`TextSplit` is one split's texts, optional text pairs, label ids and optional groups; a
:class:`LabelledData` is what :func:`hft_search.data.load_data` returns (training, test and unlabeled splits with
the label names and a fingerprint). They are kept apart from the reading code so that the training loop, the
strategies and the export path can use them without reaching into file handling.

Tokenization turns a split into a :class:`TokenizedSplit` of padded tensors; the training loop trims each batch
to its longest row, so padding to the split's longest row costs memory, not compute. Padding is always on the
right, whatever side the tokenizer was saved with (decoder LLM tokenizers often pad left): the trim then keeps
a prefix of every row, and decoders with absolute positions (GPT-2) see each real token at the position it has
in the unpadded row, so batched logits equal single-row logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TextSplit:
    """Rows of one split: texts, optional second texts, and label ids into ``LabelledData.label_names``."""

    texts: list[str]
    labels: np.ndarray
    pairs: list[str] | None = None
    groups: np.ndarray | None = None  # each row's group (``cv.group_column``), as strings

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextSplit:
        idx = np.asarray(indices, dtype=np.int64)
        pairs = [self.pairs[i] for i in idx] if self.pairs is not None else None
        return TextSplit([self.texts[i] for i in idx], self.labels[idx], pairs,
                         None if self.groups is None else self.groups[idx])


UNLABELED = -100
"""The label id of an unlabeled row (``data.unlabeled``): ``F.cross_entropy``'s ``ignore_index``."""


@dataclass(frozen=True)
class LabelledData:
    """Everything a study trains and scores on; ``fingerprint`` (a hash of these rows) goes into every trial's
    provenance and every cache key, so a changed file is never mistaken for the one a study was run on."""

    train: TextSplit
    test: TextSplit | None
    label_names: tuple[str, ...]
    fingerprint: str
    source: str
    unlabeled: TextSplit | None = None  # labels all UNLABELED; never a labelled training or a test row

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class TokenizedSplit:
    """Padded token tensors and labels of one split; what the training loop consumes."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    token_type_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> TokenizedSplit:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        tt = self.token_type_ids[idx] if self.token_type_ids is not None else None
        return TokenizedSplit(self.input_ids[idx], self.attention_mask[idx], self.labels[idx], tt)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs and labels for rows ``idx``, trimmed to the longest row of the batch."""
        mask = self.attention_mask[idx]
        width = int(mask.sum(dim=1).max().item()) if len(idx) else 1
        out = {"input_ids": self.input_ids[idx, :width], "attention_mask": mask[:, :width], "labels": self.labels[idx]}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids[idx, :width]
        return out

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Yield ``(row indices, batch)``; the indices let callers align per-row data such as teacher logits."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            yield idx, self.batch(idx)

    def concat(self, other: TokenizedSplit, pad_id: int) -> TokenizedSplit:
        """This split's rows, then ``other``'s, padded (on the right, with ``pad_id``) to the wider of the two."""
        width = max(self.input_ids.shape[1], other.input_ids.shape[1])

        def widen(tensor: torch.Tensor | None, value: int) -> torch.Tensor | None:
            if tensor is None:
                return None
            return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)

        if (self.token_type_ids is None) != (other.token_type_ids is None):
            raise ValueError("cannot concatenate splits tokenized with and without token type ids")
        types = None if self.token_type_ids is None else torch.cat([widen(self.token_type_ids, 0),
                                                                    widen(other.token_type_ids, 0)])
        return TokenizedSplit(torch.cat([widen(self.input_ids, pad_id), widen(other.input_ids, pad_id)]),
                              torch.cat([widen(self.attention_mask, 0), widen(other.attention_mask, 0)]),
                              torch.cat([self.labels, other.labels]), types)

    def to_dict(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out

    @classmethod
    def from_dict(cls, tensors: dict[str, torch.Tensor]) -> TokenizedSplit:
        return cls(tensors["input_ids"], tensors["attention_mask"], tensors["labels"], tensors.get("token_type_ids"))


def tokenize(split: TextSplit, tokenizer, max_length: int) -> TokenizedSplit:  # noqa: ANN001 - any HF tokenizer
    """Tokenize a split, truncating to ``max_length`` and padding (on the right) to the split's longest row."""
    encoded = tokenizer(split.texts, split.pairs, truncation=True, max_length=max_length,
                        padding="longest", padding_side="right", return_tensors="pt")
    return TokenizedSplit(encoded["input_ids"], encoded["attention_mask"],
                          torch.as_tensor(split.labels, dtype=torch.long), encoded.get("token_type_ids"))
