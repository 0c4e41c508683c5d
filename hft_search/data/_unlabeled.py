"""The unlabeled transfer set (``data.unlabeled``): texts a distillation teacher labels for its student.

It is read like the training file but holds no labels, so it has its own columns (``data.unlabeled_column``),
its own cap (``data.max_unlabeled_samples``) and one rule the labelled splits do not need: no row of it may equal
a labelled training row or a test row (see :func:`unlabeled_rows`).
"""

from __future__ import annotations

import logging

import numpy as np

from hft_search.data._reading import read_table
from hft_search.data._splits import UNLABELED, TextSplit
from hft_search.exceptions import DataError
from hft_search.spec import DataSpec

logger = logging.getLogger(__package__)  # "hft_search.data": the logger users (and tests) know these lines by


def unlabeled_rows(spec: DataSpec, train: TextSplit, test: TextSplit | None) -> TextSplit:
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
