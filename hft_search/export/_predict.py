"""``hft-search predict``: labels and class probabilities from a model folder written by ``train``.

The input goes through the same tokenization and the same :func:`~hft_search.training.predict_logits` as the
test split in ``train``, and the decision uses the tuned threshold stored in ``hft_search.json`` when there is
one, so ``predict`` gives exactly the labels ``train`` evaluated. Input is read completely and checked before
anything is written; the output file appears atomically, so a bad input file leaves no partial output.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hft_search.data import TextSplit, read_table, tokenize
from hft_search.exceptions import DataError, ExportError
from hft_search.export._metrics import decide
from hft_search.export._train import FORMAT_VERSION, INT8_FOLDER, METADATA_FILE
from hft_search.files import check_output, write_text_atomic
from hft_search.pooling import register_saved
from hft_search.training import predict_logits, resolve_device

OUTPUT_SUFFIXES = (".csv", ".tsv", ".jsonl")
PREDICTED_COLUMN = "predicted_label"


@dataclass
class SavedModel:
    """A model folder written by ``train``: the model, its tokenizer and its ``hft_search.json``."""

    path: Path
    model: nn.Module
    tokenizer: Any
    metadata: dict[str, Any]
    device: torch.device

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.metadata["labels"])

    @property
    def threshold(self) -> float | None:
        tuned = self.metadata.get("threshold")
        return None if tuned is None else float(tuned["value"])

    def predict_proba(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                      batch_size: int = 64) -> np.ndarray:
        """Class probabilities [len(texts), len(labels)], computed as ``train`` computed the test split's."""
        split = tokenize(TextSplit(list(texts), np.zeros(len(texts), dtype=np.int64),
                                   list(pairs) if pairs is not None else None),
                         self.tokenizer, int(self.metadata["max_length"]))
        return predict_logits(self.model, split, batch_size=batch_size, device=self.device).softmax(-1).numpy()

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[str]:
        """Label names, with the tuned threshold when the model has one."""
        ids = decide(self.predict_proba(texts, pairs), self.threshold)
        return [self.labels[i] for i in ids]


def load_model(path: str | Path, *, int8: bool = False, device: str = "auto") -> SavedModel:
    """Load a folder written by ``hft-search train`` (its ``int8/`` model with ``int8=True``, on the CPU)."""
    path = Path(path)
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise ExportError(f"{path} is not a model folder written by hft-search train (no {METADATA_FILE})")
    metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ExportError(f"{meta_file} has format version {metadata['format_version']}, newer than this "
                          f"hft_search reads ({FORMAT_VERSION}); upgrade hft_search")
    folder = path / INT8_FOLDER if int8 else path
    if int8 and not folder.is_dir():
        raise ExportError(f"{path} has no int8 model; train it with --quantize int8")
    register_saved(folder)  # its pooling's classes come from this package, never from the folder's code copy
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False).eval()
    return SavedModel(path, model, AutoTokenizer.from_pretrained(folder, trust_remote_code=False), metadata,
                      torch.device("cpu") if int8 else resolve_device(device))


# --------------------------------------------------------------------------------------------------------------
# Tables: read as training reads them (csv, tsv, jsonl, parquet); written as csv, tsv or jsonl.
# --------------------------------------------------------------------------------------------------------------


def _output_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise DataError(f"output {path}: unknown extension {path.suffix!r}; use {', '.join(OUTPUT_SUFFIXES)}")
    return suffix


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a csv/tsv/jsonl/parquet file, through the reader training uses (:func:`hft_search.data.read_table`),
    every csv/tsv column as the text written."""
    rows = read_table(path, "input").to_list()
    if not rows:
        raise DataError(f"input {path} has no rows to predict")
    return rows


def _texts(rows: list[dict[str, Any]], column: str, path: Path) -> list[str]:
    missing = [i for i, row in enumerate(rows) if column not in row]
    if missing:
        raise DataError(f"input {path}: row {missing[0] + 1} has no column {column!r} (the model's text column); "
                        f"its columns are: {', '.join(map(str, rows[missing[0]]))}")
    texts = [("" if row[column] is None else str(row[column])).strip() for row in rows]
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise DataError(f"input {path}: {len(empty)} row(s) have an empty {column!r} (first: row {empty[0] + 1})")
    return texts


def table_text(rows: list[dict[str, Any]], suffix: str) -> str:
    """Rows as csv/tsv (columns of the first row, in order) or JSON lines."""
    if suffix == ".jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def predict_file(model_dir: str | Path, input_path: str | Path, output: str | Path | None = None, *,
                 int8: bool = False, batch_size: int = 64, force: bool = False) -> list[dict[str, Any]]:
    """Predict every row of ``input_path``; write the rows with ``predicted_label`` and ``prob_<label>`` added.

    Returns the output rows. Nothing is written unless the whole input was read and predicted; an existing
    ``output`` is replaced only with ``force``.
    """
    input_path = Path(input_path)
    if batch_size < 1:
        raise ExportError(f"batch size {batch_size} must be 1 or more")
    out_suffix = None
    if output is not None:
        out_suffix = _output_suffix(Path(output))
        output = check_output(output, force=force, inputs=[("the input table (--input)", input_path),
                                                           ("the model folder", model_dir)])
    rows = read_rows(input_path)
    saved = load_model(model_dir, int8=int8)
    texts = _texts(rows, saved.metadata["text_column"], input_path)
    pair_column = saved.metadata.get("text_pair_column")
    pairs = _texts(rows, pair_column, input_path) if pair_column else None
    probs = saved.predict_proba(texts, pairs, batch_size=batch_size)
    ids = decide(probs, saved.threshold)
    out = [{**row, PREDICTED_COLUMN: saved.labels[i], **{f"prob_{name}": float(p) for name, p in
                                                          zip(saved.labels, row_probs, strict=True)}}
           for row, i, row_probs in zip(rows, ids, probs, strict=True)]
    if output is not None:
        write_text_atomic(Path(output), table_text(out, out_suffix))
    return out
