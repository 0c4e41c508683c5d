"""Labelled text data: local csv/tsv/jsonl/parquet files or hub datasets, all read through ``datasets``.

The result is a :class:`LabelledData`: texts (and optional text pairs) with contiguous integer labels whose
names are kept, a held-out test split when the spec names one, and a content fingerprint (a hash of the rows
actually used) that goes into every trial's provenance and every cache key, so a changed file can never be
mistaken for the one a study was run on.

Tokenization turns a split into a :class:`TokenizedSplit` of padded tensors; the training loop trims each batch
to its longest row, so padding to the split's longest row costs memory, not compute. Padding is always on the
right, whatever side the tokenizer was saved with (decoder LLM tokenizers often pad left): the trim then keeps
a prefix of every row, and decoders with absolute positions (GPT-2) see each real token at the position it has
in the unpadded row, so batched logits equal single-row logits.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hft_search.exceptions import DataError
from hft_search.spec import DataSpec

logger = logging.getLogger(__name__)

_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


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


# --------------------------------------------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------------------------------------------


TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def _check_utf8(file: Path, what: str) -> None:
    """Raise a :class:`DataError` naming the first byte of ``file`` that is not UTF-8.

    ``datasets`` reports a decoding error only in a log line and then fails with an unrelated message; read
    in chunks here, the real cause reaches the user.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise DataError(f"{what}: {file} is not UTF-8 text (byte {offset + error.start}); re-save it "
                                "as UTF-8") from None
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{what}: {file} is not UTF-8 text (it ends inside a character); re-save it as UTF-8") \
            from None


def _check_rows(file: Path, what: str, delimiter: str | None) -> None:
    """Check a csv/tsv (``delimiter``) or JSON-lines (None) file row by row, naming the first bad line.

    ``datasets`` (through pandas and Arrow) reads a row with one field too many as an index column, and reports
    a malformed JSON line as "an error occurred while generating the dataset"; a user needs the line.
    """
    rows = 0
    with file.open(encoding="utf-8", newline="") as handle:
        if delimiter is None:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{what}: {file}, line {number}: not valid JSON ({error.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{what}: {file}, line {number}: each line must be a JSON object")
                rows += 1
        else:
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
            reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
            header = next(reader, [])
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise DataError(f"{what}: {file}, line {reader.line_num}: has {len(fields)} fields where the "
                                    f"header has {len(header)}; fix the row or quote its text")
                rows += 1
    if rows == 0:
        raise DataError(f"{what}: {file} has no rows")


def read_table(path: str | Path, what: str, text_columns: Sequence[str] | None = None):  # noqa: ANN201
    """A local csv/tsv/jsonl/parquet file as a ``datasets.Dataset``: the one reader of training, test and
    ``predict`` input, so that a file that trains can be predicted.

    In csv/tsv files, the ``text_columns`` (every column when None: ``predict`` writes its input back) are
    read as strings exactly as written (``None``, ``NA`` or ``007`` are texts, not a missing value or the
    number 7), and in the other columns only an empty field is missing.
    ``what`` names the input in errors (``data.train``, ``input``).
    """
    import datasets

    file = Path(path)
    if not file.is_file():
        found = "is a folder, not a file" if file.is_dir() else "does not exist"
        hint = " (relative paths in a spec are resolved against the spec file's folder)" if what.startswith("data.") \
            else ""
        raise DataError(f"{what}: file {file} {found}; check the path{hint}")
    suffix = file.suffix.lower()
    fmt = _FORMATS.get(suffix)
    if fmt is None:
        raise DataError(f"{what}: {file} has an unknown extension; use .csv, .tsv, .jsonl or .parquet")
    if suffix in TEXT_SUFFIXES:
        _check_utf8(file, what)
    if suffix in (".csv", ".tsv", ".jsonl"):
        _check_rows(file, what, {".csv": ",", ".tsv": "\t"}.get(suffix))
    kwargs: dict[str, object] = {}
    if fmt == "csv":
        delimiter = "\t" if suffix == ".tsv" else ","
        if text_columns is None:
            with file.open(encoding="utf-8", newline="") as handle:
                text_columns = next(csv.reader(handle, delimiter=delimiter), [])
        kwargs = {"keep_default_na": False, "na_values": [""], "converters": dict.fromkeys(text_columns, str)}
        if suffix == ".tsv":
            kwargs.update(delimiter="\t", quoting=3)
    datasets.disable_progress_bars()  # one "Generating train split" bar per file read says nothing to a user
    reader_log = logging.getLogger("datasets")
    level = reader_log.level
    reader_log.setLevel(logging.CRITICAL)  # it logs a malformed file's error too; the DataError below says it
    try:
        return datasets.load_dataset(fmt, data_files=str(file), split="train", **kwargs)
    except Exception as error:  # datasets raises many types for malformed files
        raise DataError(f"{what}: {file} could not be read as {file.suffix}: {_causes(error)}") from None
    finally:
        reader_log.setLevel(level)


def _causes(error: BaseException) -> str:
    """An error's message and those of the errors behind it, on one line: ``datasets`` wraps the real cause."""
    parts, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {' '.join(str(current).split())[:400]}")
        current = current.__cause__ or current.__context__
    return "; caused by ".join(parts)


def _read_local(path: str, what: str, spec: DataSpec, group_column: str | None = None):  # noqa: ANN202
    columns = [c for c in (spec.text_column, spec.text_pair_column, group_column) if c]
    return read_table(path, f"data.{what}", columns)


def _read_hub(spec: DataSpec, split: str, what: str):  # noqa: ANN202 - a datasets.Dataset
    """A hub dataset split (``load_dataset(name, config, split=...)``); a local dataset folder works the same way."""
    import datasets

    try:
        return datasets.load_dataset(spec.dataset, spec.config, split=split)
    except Exception as error:
        raise DataError(
            f"data.{what}: dataset {spec.dataset!r} (config {spec.config!r}, split {split!r}) could not be loaded: "
            f"{type(error).__name__}: {str(error).splitlines()[0][:300]}. "
            "Offline, point data.train/data.test at local files."
        ) from None


def _columns(table, spec: DataSpec, where: str) -> tuple[list[str], list, list[str] | None]:  # noqa: ANN001
    wanted = [("text_column", spec.text_column), ("label_column", spec.label_column)]
    if spec.text_pair_column:
        wanted.append(("text_pair_column", spec.text_pair_column))
    for key, column in wanted:
        if column not in table.column_names:
            raise DataError(f"data.{key}: column {column!r} is not in {where}; its columns are: "
                            f"{', '.join(table.column_names)}")
    texts = [("" if t is None else str(t)).strip() for t in table[spec.text_column]]
    pairs = None
    if spec.text_pair_column:
        pairs = [("" if t is None else str(t)).strip() for t in table[spec.text_pair_column]]
    labels = list(table[spec.label_column])
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise DataError(f"data.text_column: {len(empty)} row(s) of {where} have empty text (first at row {empty[0]}); "
                        "remove them or fix the column")
    missing = [i for i, label in enumerate(labels) if label is None or (isinstance(label, float) and np.isnan(label))]
    if missing:
        raise DataError(f"data.label_column: {len(missing)} row(s) of {where} have no label "
                        f"(first at row {missing[0]})")
    return texts, labels, pairs


def _label_names(train_labels: list, where: str) -> tuple[str, ...]:
    values = sorted(set(train_labels), key=lambda v: (isinstance(v, str), v))
    if len(values) < 2:
        raise DataError(f"data.label_column: {where} has a single class ({values[0]!r}); "
                        "a classifier needs two or more")
    fractional = [v for v in values if isinstance(v, float) and not v.is_integer()]
    if fractional:
        raise DataError(f"data.label_column: {where} holds {len(fractional)} label values that are not whole "
                        f"numbers (e.g. {', '.join(f'{v:g}' for v in fractional[:3])}): a continuous target, "
                        "and hft-search trains classifiers; map the values to classes (names or whole numbers)")
    return tuple(str(v) for v in values)


def deduplicated(split: TextSplit, spec: DataSpec) -> TextSplit:
    """``split`` without exact copies of earlier rows (same text, pair and label) when ``data.deduplicate``;
    otherwise as it is. Copies land in different folds, so each is scored by a model that trained on its twin:
    the CV estimate is inflated by memorisation, not generalisation. Dropping happens before
    ``max_train_samples`` subsampling, so the subsample is drawn from distinct rows."""
    if not spec.deduplicate:
        return split
    keep = _first_occurrences(split)
    if len(keep) < len(split):
        logger.info("data.deduplicate: dropped %d exact copies of earlier training rows", len(split) - len(keep))
        return split.subset(keep)
    return split


def warn_of_copies(split: TextSplit) -> None:
    """Warn, with their count, of exact copies among the training rows a study actually uses (after
    ``max_train_samples``): a count over the whole file would overstate what reaches the folds."""
    copies = len(split) - len(_first_occurrences(split))
    if copies:
        logger.warning("data.train: %d of the %d training rows used are exact copies of earlier rows (same text and "
                       "label); copies land in different folds and inflate the CV score: set data.deduplicate: true "
                       "to drop them", copies, len(split))


def _first_occurrences(split: TextSplit) -> list[int]:
    """Indices of the rows of ``split`` that are not exact copies (text, pair, label) of an earlier row."""
    pairs = split.pairs if split.pairs is not None else [None] * len(split)
    seen: set[tuple[str, str | None, int]] = set()
    return [i for i, row in enumerate(zip(split.texts, pairs, split.labels.tolist(), strict=True))
            if not (row in seen or seen.add(row))]


def check_classes(labels: np.ndarray, names: Sequence[str], where: str, fix: str) -> None:
    """Raise one line naming every class of ``labels`` with fewer than 2 rows: stratified sampling and
    stratified folds cannot place a class that has a single row (scikit-learn's traceback says "the least
    populated class in y has only 1 member")."""
    counts = np.bincount(labels, minlength=len(names))
    rare = [names[i] for i in np.flatnonzero(counts < 2)]
    if rare:
        listed = ", ".join(repr(name) for name in rare[:5]) + (f" and {len(rare) - 5} more" if len(rare) > 5 else "")
        raise DataError(f"data.label_column: {where} has fewer than 2 rows of class {listed}; stratified folds need "
                        f"at least cv.folds rows of every class: {fix}")


def _to_ids(labels: list, names: tuple[str, ...], where: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(v) for v in labels} - set(index))
    if unknown:
        raise DataError(f"data.test: {where} has labels the training data lacks: {', '.join(unknown)}; "
                        "a model cannot learn them — drop those rows or add training examples")
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


def stratified_subsample(labels: np.ndarray, n: int, seed: int, what: str = "max_train_samples") -> np.ndarray:
    """Indices of a seeded subsample of ``n`` rows that keeps the class proportions (sorted, reproducible).

    Raises:
        DataError: ``n`` rows, or the rows left out, cannot hold every class (``what`` names the field).
    """
    if n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    classes = len(np.unique(labels))
    if min(n, len(labels) - n) < classes:
        raise DataError(f"data.{what}: {n} of {len(labels)} rows cannot be drawn stratified by {classes} classes "
                        f"(the rows kept and the rows left out must each hold every class); use at most "
                        f"{len(labels) - classes} and at least {classes}, or drop the setting")
    keep, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(keep)


def fingerprint(split: TextSplit, test: TextSplit | None, names: tuple[str, ...],
                unlabeled: TextSplit | None = None) -> str:
    """A hash of the rows used (texts, pairs, labels, label names), independent of where they came from."""
    digest = hashlib.sha256(json.dumps(names).encode())
    for part in (split, test, unlabeled):
        if part is None:
            continue
        digest.update(json.dumps([part.texts, part.pairs, part.labels.tolist()]).encode())
    return digest.hexdigest()[:16]


def _groups(table, column: str, where: str) -> np.ndarray:  # noqa: ANN001 - a datasets.Dataset
    """The group of every row (``cv.group_column``), as strings; a missing column or value is an error."""
    if column not in table.column_names:
        raise DataError(f"cv.group_column: column {column!r} is not in {where}; its columns are: "
                        f"{', '.join(table.column_names)}")
    values = table[column]
    missing = [i for i, v in enumerate(values) if v is None or str(v).strip() == ""]
    if missing:
        raise DataError(f"cv.group_column: {len(missing)} row(s) of {where} have no group in column {column!r} "
                        f"(first at row {missing[0]}); fill them in")
    return np.array([str(v) for v in values])


def load_data(spec: DataSpec, group_column: str | None = None) -> LabelledData:
    """Read, check and subsample the data a spec names; with ``group_column`` (``cv.group_column``) the training
    rows carry their group. Errors name the ``data.*`` (or ``cv.group_column``) field to fix."""
    if spec.dataset is not None:
        train_table = _read_hub(spec, spec.train_split, "dataset")
        test_table = _read_hub(spec, spec.test_split, "test_split") if spec.test_split else None
        source = f"{spec.dataset}/{spec.config}" if spec.config else spec.dataset
    else:
        train_table = _read_local(spec.train, "train", spec, group_column)
        test_table = _read_local(spec.test, "test", spec) if spec.test else None
        source = spec.train
    texts, raw_labels, pairs = _columns(train_table, spec, f"the training data ({source})")
    names = _label_names(raw_labels, f"the training data ({source})")
    groups = None if group_column is None else _groups(train_table, group_column, f"the training data ({source})")
    train = deduplicated(TextSplit(texts, _to_ids(raw_labels, names, "the training data"), pairs, groups), spec)
    check_classes(train.labels, names, f"the training data ({source})", "add rows of it or drop its rows")
    if spec.max_train_samples is not None:
        train = train.subset(stratified_subsample(train.labels, spec.max_train_samples, spec.seed))
        check_classes(train.labels, names, f"the {len(train)}-row subsample (data.max_train_samples)",
                      "raise data.max_train_samples, or drop the rare class's rows")
    if not spec.deduplicate:
        warn_of_copies(train)
    test = None
    if test_table is not None:
        t_texts, t_labels, t_pairs = _columns(test_table, spec, "the test data")
        test = TextSplit(t_texts, _to_ids(t_labels, names, "the test data"), t_pairs)
        if spec.max_test_samples is not None and spec.max_test_samples < len(test):
            check_classes(test.labels, names, "the test data", "drop data.max_test_samples or the rare class's rows")
            test = test.subset(stratified_subsample(test.labels, spec.max_test_samples, spec.seed,
                                                    "max_test_samples"))
    counts = Counter(train.labels.tolist())
    logger.info("data %s: %d training rows, %s test rows, labels %s", source, len(train),
                len(test) if test else "no", dict(zip(names, (counts[i] for i in range(len(names))), strict=True)))
    unlabeled = _unlabeled(spec, train, test) if spec.unlabeled else None
    return LabelledData(train, test, names, fingerprint(train, test, names, unlabeled), source, unlabeled)


def _unlabeled(spec: DataSpec, train: TextSplit, test: TextSplit | None) -> TextSplit:
    """The texts of ``data.unlabeled``, without any row equal to a labelled training row or a test row.

    Why those are dropped: the teacher labels these rows for the student, so a validation row among them would
    hand the student its fold's answers (through the teacher), and a test row would leak the held-out split.
    Dropping every labelled row keeps the set the same for every fold (one cache entry), and a row of the fold's
    own training part is labelled already.
    """
    column = spec.unlabeled_column or spec.text_column
    table = read_table(spec.unlabeled, "data.unlabeled", [c for c in (column, spec.text_pair_column) if c])
    for key, name in (("unlabeled_column", column), ("text_pair_column", spec.text_pair_column)):
        if name and name not in table.column_names:
            raise DataError(f"data.{key}: column {name!r} is not in {spec.unlabeled}; its columns are: "
                            f"{', '.join(table.column_names)}")
    texts = [("" if t is None else str(t)).strip() for t in table[column]]
    pairs = ([("" if t is None else str(t)).strip() for t in table[spec.text_pair_column]]
             if spec.text_pair_column else [None] * len(texts))
    known = {(t, p) for part in (train, test) if part is not None
             for t, p in zip(part.texts, part.pairs or [None] * len(part), strict=True)}
    keep = [i for i, row in enumerate(zip(texts, pairs, strict=True)) if row[0] and row not in known]
    dropped = len(texts) - len(keep)
    if spec.max_unlabeled_samples is not None and len(keep) > spec.max_unlabeled_samples:
        rng = np.random.default_rng(spec.seed)
        keep = sorted(rng.choice(keep, spec.max_unlabeled_samples, replace=False).tolist())
    if not keep:
        raise DataError(f"data.unlabeled: {spec.unlabeled} has no row left once empty texts and rows equal to "
                        "labelled training or test rows are dropped")
    logger.info("data.unlabeled %s: %d rows used (%d empty or equal to a labelled or test row dropped)",
                spec.unlabeled, len(keep), dropped)
    return TextSplit([texts[i] for i in keep], np.full(len(keep), UNLABELED, dtype=np.int64),
                     [pairs[i] for i in keep] if spec.text_pair_column else None)
