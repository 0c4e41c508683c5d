"""Which training and test rows a study uses: exact copies, rare classes, stratified subsamples, the fingerprint.

These rules decide what reaches the folds, so they live together: copies are dropped (``data.deduplicate``)
before ``max_train_samples`` subsampling so that the subsample is drawn from distinct rows, the subsample keeps
the class proportions, every class keeps the 2 rows stratified folds need, and the :func:`fingerprint` hashes
exactly the rows that come out of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

import numpy as np

from hft_search.data._splits import TextSplit
from hft_search.exceptions import DataError

logger = logging.getLogger(__package__)  # "hft_search.data": the logger users (and tests) know these lines by


def deduplicated(split: TextSplit) -> TextSplit:
    """``split`` without exact copies of earlier rows (same text, pair and label), for ``data.deduplicate``.
    Copies land in different folds, so each is scored by a model that trained on its twin: the CV estimate is
    inflated by memorisation, not generalisation. :func:`~hft_search.data.load_data` drops them before
    ``max_train_samples`` subsampling, so the subsample is drawn from distinct rows."""
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
