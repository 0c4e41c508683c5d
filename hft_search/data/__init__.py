"""Labelled text data: local csv/tsv/jsonl/parquet files or hub datasets, all read through ``datasets``.

The result is a :class:`LabelledData`: texts (and optional text pairs) with contiguous integer labels whose
names are kept, a held-out test split when the spec names one, and a content fingerprint (a hash of the rows
actually used) that goes into every trial's provenance and every cache key, so a changed file can never be
mistaken for the one a study was run on.

The package keeps one concept per private module, and every public name is importable from here:

- ``_splits``: the row containers (:class:`TextSplit`, :class:`LabelledData`, :class:`TokenizedSplit`) and
  :func:`tokenize` between them;
- ``_reading``: a file or hub split as a table (:func:`read_table`, the one reader of training and ``predict``
  input), with the UTF-8 and row checks that name a malformed file's line;
- ``_columns``: from a table to checked texts, labels, label names and groups;
- ``_rows``: which rows are used (copies, rare classes, stratified subsamples) and their :func:`fingerprint`;
- ``_unlabeled``: the distillation transfer set (``data.unlabeled``).

:func:`load_data`, here, strings them together in the order that matters. Every module logs as
``hft_search.data``, the logger name users filter by.
"""

from __future__ import annotations

import logging
from collections import Counter

from hft_search.data._columns import columns_of, groups_of, label_names, to_ids
from hft_search.data._reading import TEXT_SUFFIXES, read_hub, read_local, read_table
from hft_search.data._rows import check_classes, deduplicated, fingerprint, stratified_subsample, warn_of_copies
from hft_search.data._splits import UNLABELED, LabelledData, TextSplit, TokenizedSplit, tokenize
from hft_search.data._unlabeled import unlabeled_rows
from hft_search.spec import DataSpec

logger = logging.getLogger(__name__)

__all__ = [
    "TEXT_SUFFIXES",
    "UNLABELED",
    "LabelledData",
    "TextSplit",
    "TokenizedSplit",
    "check_classes",
    "deduplicated",
    "fingerprint",
    "load_data",
    "read_table",
    "stratified_subsample",
    "tokenize",
    "warn_of_copies",
]


def load_data(spec: DataSpec, group_column: str | None = None) -> LabelledData:
    """Read, check and subsample the data a spec names; with ``group_column`` (``cv.group_column``) the training
    rows carry their group. Errors name the ``data.*`` (or ``cv.group_column``) field to fix."""
    if spec.dataset is not None:
        train_table = read_hub(spec, spec.train_split, "dataset")
        test_table = read_hub(spec, spec.test_split, "test_split") if spec.test_split else None
        source = f"{spec.dataset}/{spec.config}" if spec.config else spec.dataset
    else:
        train_table = read_local(spec.train, "train", spec, group_column)
        test_table = read_local(spec.test, "test", spec) if spec.test else None
        source = spec.train
    texts, raw_labels, pairs = columns_of(train_table, spec, f"the training data ({source})")
    names = label_names(raw_labels, f"the training data ({source})")
    groups = None if group_column is None else groups_of(train_table, group_column, f"the training data ({source})")
    train = TextSplit(texts, to_ids(raw_labels, names, "the training data"), pairs, groups)
    if spec.deduplicate:
        train = deduplicated(train)
    check_classes(train.labels, names, f"the training data ({source})", "add rows of it or drop its rows")
    if spec.max_train_samples is not None:
        train = train.subset(stratified_subsample(train.labels, spec.max_train_samples, spec.seed))
        check_classes(train.labels, names, f"the {len(train)}-row subsample (data.max_train_samples)",
                      "raise data.max_train_samples, or drop the rare class's rows")
    if not spec.deduplicate:
        warn_of_copies(train)
    test = None
    if test_table is not None:
        t_texts, t_labels, t_pairs = columns_of(test_table, spec, "the test data")
        test = TextSplit(t_texts, to_ids(t_labels, names, "the test data"), t_pairs)
        if spec.max_test_samples is not None and spec.max_test_samples < len(test):
            check_classes(test.labels, names, "the test data", "drop data.max_test_samples or the rare class's rows")
            test = test.subset(stratified_subsample(test.labels, spec.max_test_samples, spec.seed,
                                                    "max_test_samples"))
    counts = Counter(train.labels.tolist())
    logger.info("data %s: %d training rows, %s test rows, labels %s", source, len(train),
                len(test) if test else "no", dict(zip(names, (counts[i] for i in range(len(names))), strict=True)))
    unlabeled = unlabeled_rows(spec, train, test) if spec.unlabeled else None
    return LabelledData(train, test, names, fingerprint(train, test, names, unlabeled), source, unlabeled)
