"""Decisions from probabilities, the test-set report, and the decision threshold tuned out of fold.

Why a decision threshold: for a binary task, argmax (a threshold of 0.5 on the positive class) maximises
accuracy only when the model is calibrated and the metric is accuracy. For F1 or MCC another cut is often
better. Following scikit-learn's ``TunedThresholdClassifierCV``, the cut is chosen on *out-of-fold*
probabilities (each training row scored by the fold model that did not train on it), never on the test split,
so the test score of the tuned rule stays an honest estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from hft_search.exceptions import ExportError
from hft_search.training import compute_metric

LABEL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "f1": lambda y, p: skm.f1_score(y, p, zero_division=0),
    "f1_macro": lambda y, p: skm.f1_score(y, p, average="macro", zero_division=0),
    "mcc": skm.matthews_corrcoef,
}
"""Metrics of hard binary decisions, the ones a threshold can be tuned for (``f1`` is of the positive class)."""


@dataclass(frozen=True)
class Threshold:
    """A tuned cut on the probability of the positive class (label id 1) and the evidence for it."""

    value: float
    metric: str
    positive_label: str
    oof_score: float  # metric of the tuned cut on the out-of-fold probabilities
    oof_score_argmax: float  # metric of argmax on the same probabilities, for comparison
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Label ids from class probabilities: argmax, or for a binary task ``p(label 1) >= threshold``."""
    if threshold is None:
        return probs.argmax(axis=1)
    if probs.shape[1] != 2:
        raise ExportError("a decision threshold applies to binary tasks only; this model has "
                          f"{probs.shape[1]} labels")
    return (probs[:, 1] >= threshold).astype(np.int64)


def _candidates(positive: np.ndarray) -> np.ndarray:
    """Cuts worth trying: midpoints between consecutive distinct probabilities (every distinct decision)."""
    values = np.unique(positive)
    middle = (values[:-1] + values[1:]) / 2
    return np.unique(np.concatenate([middle, [0.5]]))


def check_tunable(metric: str, label_names: tuple[str, ...]) -> None:
    """Reject a threshold request that cannot be met, before any fine-tune is spent on it."""
    if metric not in LABEL_METRICS:
        raise ExportError(f"--tune-threshold {metric}: a threshold can be tuned for "
                          f"{', '.join(LABEL_METRICS)} (metrics of hard decisions)")
    if len(label_names) != 2:
        raise ExportError(f"--tune-threshold is for binary tasks; this one has {len(label_names)} labels "
                          f"({', '.join(label_names)})")


def tune_threshold(labels: np.ndarray, probs: np.ndarray, metric: str, label_names: tuple[str, ...]) -> Threshold:
    """The cut on ``probs[:, 1]`` that maximises ``metric`` on out-of-fold ``probs``; ties go nearest to 0.5."""
    check_tunable(metric, label_names)
    score = LABEL_METRICS[metric]
    cuts = _candidates(probs[:, 1])
    scores = np.array([score(labels, (probs[:, 1] >= cut).astype(np.int64)) for cut in cuts])
    best = np.flatnonzero(scores == scores.max())
    chosen = best[np.argmin(np.abs(cuts[best] - 0.5))]
    return Threshold(float(cuts[chosen]), metric, label_names[1], float(scores[chosen]),
                     float(score(labels, probs.argmax(axis=1))), int(len(labels)))


def score(metric: str, labels: np.ndarray, probs: np.ndarray, threshold: float | None = None) -> float:
    """``metric`` as the study computes it (argmax), or of the thresholded decisions when a cut is given.

    ``roc_auc`` ranks the probabilities themselves, so a threshold does not change it.
    """
    if threshold is None or metric == "roc_auc":
        return compute_metric(metric, labels, probs)
    return float(LABEL_METRICS[metric](labels, decide(probs, threshold)))


def classification_metrics(labels: np.ndarray, probs: np.ndarray, label_names: tuple[str, ...], metric: str,
                           threshold: float | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, the study's metric, scikit-learn's classification report and the confusion matrix.

    The keys are those of the study attribute ``final_model.metrics`` (see ``docs/user_attrs.md``), plus
    ``metric``/``score`` and the text form of the report.
    """
    predicted = decide(probs, threshold)
    ids = list(range(len(label_names)))
    report_args = {"labels": ids, "target_names": list(label_names), "zero_division": 0}
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "f1_macro": float(skm.f1_score(labels, predicted, average="macro", labels=ids, zero_division=0)),
        "metric": metric,
        "score": score(metric, labels, probs, threshold),
        "classification_report": skm.classification_report(labels, predicted, output_dict=True, **report_args),
        "classification_report_text": skm.classification_report(labels, predicted, digits=4, **report_args),
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=ids).tolist(),
        "labels": list(label_names),
        "rows": int(len(labels)),
        "threshold": threshold,
    }
