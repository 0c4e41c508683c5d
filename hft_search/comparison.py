"""Is one configuration better than another? Their fold-by-fold differences, and the corrected resampled t-test.

Why paired: every configuration of a study is scored on the same folds with the same seeds (common random
numbers, :mod:`hft_search.resampling`), so fold *i* of one and fold *i* of the other differ only by the
configuration. A pruned trial is compared on the folds it finished.

Why *corrected*: the k folds' training sets overlap (each pair shares (k−2)/(k−1) of its rows), so the fold
differences are correlated and their sample variance underestimates the variance of their mean. A plain
paired t-test (``scipy.stats.ttest_rel``) then gives p-values far too small: at 3 folds its standard error is
1.6 times too small, with 2 degrees of freedom. Nadeau & Bengio (2003, "Inference for the generalization
error", Machine Learning 52) correct the variance of the mean from σ²/n to (1/n + n_test/n_train)·σ²; Bouckaert
& Frank (2004, "Evaluating the replicability of significance tests for comparing learning algorithms", PAKDD)
apply it to r repeats of a k-fold (n = k·r differences, k·r − 1 degrees of freedom): their *corrected repeated
k-fold cv test*, the "corrected resampled t-test" of Weka and of scikit-learn's example "Statistical comparison
of models using grid search". p is two-sided here: a lift is a claim in either direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

TEST_NAME = "corrected resampled t-test"
"""How every view names the test (``corrected resampled t-test over 3×1 folds``)."""
SIGNIFICANCE = 0.05
"""p-value below which a difference counts as real (better or worse)."""
ZERO_SPREAD = 1e-9
"""Paired differences with less spread than this are equal up to rounding: the t-test is then undefined."""

Verdict = Literal["better", "worse", "not separated"]


def corrected_ttest(differences: Sequence[float], test_train_ratio: float) -> tuple[float, float] | None:
    """Student's t and its two-sided p for paired fold differences, with the Nadeau–Bengio correction.

    ``t = mean(d) / sqrt((1/n + n_test/n_train) · var(d))`` with the sample variance (ddof 1) and n − 1 degrees
    of freedom (n = k·r folds). None when undefined: fewer than two differences, or differences without spread.
    """
    from scipy import stats

    diffs = np.asarray(differences, dtype=float)
    if len(diffs) < 2 or float(np.std(diffs, ddof=1)) <= ZERO_SPREAD:
        return None
    variance = (1.0 / len(diffs) + test_train_ratio) * float(np.var(diffs, ddof=1))
    t = float(np.mean(diffs)) / math.sqrt(variance)
    return t, float(2 * stats.t.sf(abs(t), df=len(diffs) - 1))


def folds_text(folds: int, repeats: int) -> str:
    """``3×2 folds`` (k × repeats) when the folds are whole repeats, else ``4 folds``."""
    if repeats >= 1 and folds % repeats == 0:
        return f"{folds // repeats}×{repeats} folds"
    return f"{folds} folds"


@dataclass(frozen=True)
class Lift:
    """A configuration's fold-by-fold difference to a reference (trial − reference; positive is better: every
    metric is better when higher). ``p_value`` is the corrected resampled t-test's, None when it is undefined."""

    mean: float
    std: float  # sample standard deviation of the paired differences (0 with one fold)
    p_value: float | None
    folds: int  # paired folds compared
    baseline_trial: int  # the reference trial
    repeats: int = 1
    test_train_ratio: float | None = None  # n_test / n_train of the folds; None in lifts stored before 0.2

    @property
    def verdict(self) -> Verdict:
        """``better`` or ``worse`` when p < :data:`SIGNIFICANCE` in that direction, else ``not separated``."""
        if self.p_value is None or self.p_value >= SIGNIFICANCE or self.mean == 0:
            return "not separated"
        return "better" if self.mean > 0 else "worse"

    @property
    def significant(self) -> bool:
        """Better than the reference: a positive mean difference with p < :data:`SIGNIFICANCE`."""
        return self.verdict == "better"

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attr(cls, value: Any) -> Lift | None:
        return cls(**value) if isinstance(value, dict) else None

    def text(self) -> str:
        """``+0.0123 ± 0.0040 (corrected resampled t-test over 3×1 folds, p = 0.031)``."""
        p = f"p = {self.p_value:.3g}" if self.p_value is not None else (
            "p undefined: one fold" if self.folds < 2 else "p undefined: the differences have no spread")
        return f"{self.mean:+.4f} ± {self.std:.4f} ({TEST_NAME} over {folds_text(self.folds, self.repeats)}, {p})"


def compute_lift(scores: Sequence[float], baseline_scores: Sequence[float], baseline_trial: int, *,
                 repeats: int = 1, test_train_ratio: float | None = None) -> Lift | None:
    """The lift of fold ``scores`` over ``baseline_scores`` on the folds both have (None: no common fold).

    Fold *i* of one is paired with fold *i* of the other; the difference is trial − baseline, positive when the
    trial scores higher (every metric is better when higher). ``test_train_ratio`` is n_test / n_train of the folds; by
    default that of a plain k-fold, 1 / (k − 1), with k the reference's folds per repeat.
    """
    n = min(len(scores), len(baseline_scores))
    pairs = [(a, b) for a, b in zip(scores[:n], baseline_scores[:n], strict=True)
             if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return None
    if test_train_ratio is None:
        k = max(2, len(baseline_scores) // max(repeats, 1))
        test_train_ratio = 1.0 / (k - 1)
    trial, base = (np.array(side, dtype=float) for side in zip(*pairs, strict=True))
    diffs = trial - base
    std = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    test = corrected_ttest(diffs, test_train_ratio)
    return Lift(float(np.mean(diffs)), std, None if test is None else test[1], len(diffs), baseline_trial,
                repeats, float(test_train_ratio))


def size_ratio(fold_sizes: Sequence[Sequence[int]] | None, folds: int) -> float | None:
    """n_test / n_train over the first ``folds`` recorded ``[n_train, n_test]`` pairs; None when not recorded."""
    if not fold_sizes or len(fold_sizes) < folds:
        return None
    train = sum(int(size[0]) for size in fold_sizes[:folds])
    test = sum(int(size[1]) for size in fold_sizes[:folds])
    return test / train if train else None
