"""Which rows each fold trains on and scores, and with which seed: the search's repeated k-fold, and the fresh
repeats of the confirmation round. It knows nothing of models or Optuna.

The splitter is chosen from the data, in the spirit of scikit-learn's ``check_cv`` (a classifier gets a
stratified splitter): ``StratifiedKFold`` by default; with ``cv.group_column``, ``StratifiedGroupKFold`` (rows of
one group, e.g. one source document or one speaker, never straddle folds), or ``GroupKFold`` when some class
occurs in fewer groups than there are folds, so that stratifying by group cannot balance it.

The seeds, one sequence per study, so that every trial sees the same splits and seeds (common random numbers)
and the confirmation round sees ones the search never used:

* repeat *j* of the k-fold is split with seed ``cv.seed + j``; repeat 0 is the plain k-fold of a study made
  before repeats existed (same folds, same cache entries);
* the search runs repeats ``0 … cv.repeats − 1``; the confirmation round runs the *next* repeats
  ``cv.repeats … cv.repeats + R − 1`` (always shuffled: fresh splits need a shuffle);
* fold *f* of repeat *j* (global index ``j·k + f``) trains with seed ``cv.seed · 1000 + j·k + f``: the new
  head's initial weights, the batch order, dropout. So the confirmation's training seeds continue the search's
  sequence and are fresh too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from hft_search.exceptions import DataError
from hft_search.spec import CVSpec

logger = logging.getLogger(__name__)

Fold = tuple[np.ndarray, np.ndarray]
Splitter = StratifiedKFold | StratifiedGroupKFold | GroupKFold


@dataclass(frozen=True)
class Resampling:
    """``repeats`` repeats of a k-fold, starting at repeat ``first_repeat`` of the study's seed sequence."""

    folds: int
    repeats: int
    first_repeat: int
    cv_seed: int
    shuffle: bool
    group_column: str | None = None

    @classmethod
    def search(cls, cv: CVSpec) -> Resampling:
        """The folds every trial of the search is scored on."""
        return cls(cv.folds, cv.repeats, 0, cv.seed, cv.shuffle, cv.group_column)

    @classmethod
    def confirmation(cls, cv: CVSpec, repeats: int) -> Resampling:
        """``repeats`` fresh repeats that follow the search's: splits and seeds no trial was scored on."""
        return cls(cv.folds, repeats, cv.repeats, cv.seed, True, cv.group_column)

    @property
    def size(self) -> int:
        """Fold scores per configuration: k × repeats."""
        return self.folds * self.repeats

    def split_seed(self, repeat: int) -> int:
        """The splitter's seed of repeat ``repeat`` (counted from this resampling's first)."""
        return self.cv_seed + self.first_repeat + repeat

    def fold_seed(self, fold: int) -> int:
        """The training seed of fold ``fold`` (global index over the repeats)."""
        return self.cv_seed * 1000 + self.first_repeat * self.folds + fold

    def fold_key(self, fold: int) -> dict[str, Any]:
        """What identifies fold ``fold``'s rows in cache keys; repeat 0 keeps the key of a plain k-fold."""
        repeat, index = divmod(fold, self.folds)
        return {"fold": index, "folds": self.folds, "cv_seed": self.split_seed(repeat), "shuffle": self.shuffle}

    def describe(self) -> dict[str, Any]:
        """The resampling as stored with a confirmation: enough to tell whether two rounds are the same."""
        return {"folds": self.folds, "repeats": self.repeats, "first_repeat": self.first_repeat,
                "split_seeds": [self.split_seed(j) for j in range(self.repeats)],
                "fold_seeds": [self.fold_seed(f) for f in range(self.size)], "shuffle": self.shuffle,
                "group_column": self.group_column}


def check_splitter(labels: np.ndarray, groups: np.ndarray | None, folds: int, *, shuffle: bool,
                   seed: int | None, group_column: str | None = None) -> Splitter:
    """The k-fold splitter for these labels (and groups), checked: every fold must get rows of every class
    (stratified) or at least one group; errors name the ``cv.*`` field to change."""
    random_state = seed if shuffle else None
    if groups is None:
        counts = np.bincount(labels)
        if counts.min() < folds:
            raise DataError(f"cv.folds: {folds} folds need at least {folds} rows of every class, but one class has "
                            f"{counts.min()}; lower cv.folds or add rows")
        return StratifiedKFold(folds, shuffle=shuffle, random_state=random_state)
    distinct = np.unique(groups)
    if len(distinct) < folds:
        raise DataError(f"cv.group_column: column {group_column!r} has {len(distinct)} group(s), fewer than "
                        f"cv.folds={folds}; lower cv.folds or give more groups")
    groups_per_class = [len(np.unique(groups[labels == label])) for label in np.unique(labels)]
    if min(groups_per_class) >= folds:
        return StratifiedGroupKFold(folds, shuffle=shuffle, random_state=random_state)
    logger.info("cv.group_column: a class occurs in only %d group(s), fewer than the %d folds: GroupKFold "
                "(no stratification)", min(groups_per_class), folds)
    return GroupKFold(folds, shuffle=shuffle, random_state=random_state)


def make_folds(labels: np.ndarray, groups: np.ndarray | None, resampling: Resampling) -> list[Fold]:
    """The ``k × repeats`` (train, validation) index pairs of a resampling, repeat by repeat."""
    folds: list[Fold] = []
    for repeat in range(resampling.repeats):
        splitter = check_splitter(labels, groups, resampling.folds, shuffle=resampling.shuffle,
                                  seed=resampling.split_seed(repeat), group_column=resampling.group_column)
        folds += list(splitter.split(np.zeros(len(labels)), labels, groups))
    return folds


def groups_digest(groups: np.ndarray | None) -> str | None:
    """A hash of the group of every row, for cache keys: the same rows grouped otherwise are other folds."""
    if groups is None:
        return None
    return hashlib.sha256(json.dumps([str(g) for g in groups]).encode()).hexdigest()[:16]
