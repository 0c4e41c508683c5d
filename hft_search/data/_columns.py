"""From a read table to checked rows: the text, pair, label and group columns a spec names.

Every check here raises a :class:`DataError` that names the ``data.*`` (or ``cv.group_column``) field to fix and
the first offending row, because a missing column, an empty text or a missing label would otherwise surface as
an unrelated error deep inside tokenization or scikit-learn's fold split.
"""

from __future__ import annotations

import numpy as np

from hft_search.exceptions import DataError
from hft_search.spec import DataSpec


def columns_of(table, spec: DataSpec, where: str) -> tuple[list[str], list, list[str] | None]:  # noqa: ANN001
    """The stripped texts, raw labels and stripped pairs (None without ``data.text_pair_column``) of ``table``."""
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


def label_names(train_labels: list, where: str) -> tuple[str, ...]:
    """The sorted distinct training labels as strings: their positions are the label ids a model learns."""
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


def to_ids(labels: list, names: tuple[str, ...], where: str) -> np.ndarray:
    """``labels`` as ids into ``names``; a test label the training data lacks is an error, not a silent miss."""
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(v) for v in labels} - set(index))
    if unknown:
        raise DataError(f"data.test: {where} has labels the training data lacks: {', '.join(unknown)}; "
                        "a model cannot learn them — drop those rows or add training examples")
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


def groups_of(table, column: str, where: str) -> np.ndarray:  # noqa: ANN001 - a datasets.Dataset
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
