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

from hft_search.data import TextSplit, tokenize
from hft_search.exceptions import DataError, ExportError
from hft_search.export._files import write_text_atomic
from hft_search.export._metrics import decide
from hft_search.export._train import FORMAT_VERSION, INT8_FOLDER, METADATA_FILE
from hft_search.training import predict_logits, resolve_device

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
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
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    return SavedModel(path, model, AutoTokenizer.from_pretrained(folder), metadata,
                      torch.device("cpu") if int8 else resolve_device(device))


# --------------------------------------------------------------------------------------------------------------
# Tables: csv, tsv, jsonl.
# --------------------------------------------------------------------------------------------------------------


def _suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{what} {path}: unknown extension {path.suffix!r}; use {', '.join(TABLE_SUFFIXES)}")
    return suffix


def _read_delimited(path: Path, text: str, delimiter: str) -> list[dict[str, Any]]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # as data.py reads training .tsv
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = next(reader, [])
    rows = []
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataError(f"{path}, line {reader.line_num}: has {len(fields)} fields where the header has "
                            f"{len(header)}; fix the row or quote its text")
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


def _read_jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: each line must be a JSON object with a text field")
        rows.append(row)
    return rows


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a csv/tsv/jsonl file, with errors that name the file and line."""
    path = Path(path)
    suffix = _suffix(path, "input")
    if not path.is_file():
        raise DataError(f"input {path} does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"input {path} is not UTF-8 text (byte {error.start}); re-save it as UTF-8") from None
    if suffix == ".jsonl":
        rows = _read_jsonl(path, text)
    else:
        rows = _read_delimited(path, text, "\t" if suffix == ".tsv" else ",")
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
                 int8: bool = False, batch_size: int = 64) -> list[dict[str, Any]]:
    """Predict every row of ``input_path``; write the rows with ``predicted_label`` and ``prob_<label>`` added.

    Returns the output rows. Nothing is written unless the whole input was read and predicted.
    """
    input_path = Path(input_path)
    out_suffix = _suffix(Path(output), "output") if output is not None else None
    if output is not None and Path(output).resolve() == input_path.resolve():
        raise ExportError(f"--output {output} is the input file; write the predictions elsewhere")
    rows = read_table(input_path)
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
