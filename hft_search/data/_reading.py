"""Reading a table: a local csv/tsv/jsonl/parquet file or a hub dataset split, as a ``datasets.Dataset``.

Training, test, unlabeled and ``predict`` input all go through :func:`read_table`, so that a file that trains
can be predicted. ``datasets`` reports a malformed file poorly (a log line and an unrelated error, or a row with
one field too many read as an index column), so local text files are checked here first (UTF-8, then row by
row) and every error names the file, the line and the spec field to fix.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from hft_search.exceptions import DataError
from hft_search.spec import DataSpec

_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}

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


def read_local(path: str, what: str, spec: DataSpec, group_column: str | None = None):  # noqa: ANN201
    """A local ``data.train``/``data.test`` file, its text, pair and group columns read as strings."""
    columns = [c for c in (spec.text_column, spec.text_pair_column, group_column) if c]
    return read_table(path, f"data.{what}", columns)


def read_hub(spec: DataSpec, split: str, what: str):  # noqa: ANN201 - a datasets.Dataset
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
