"""Validation metrics, computed from class probabilities with scikit-learn.

Every metric is "higher is better", which early stopping and the study direction rely on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from sklearn import metrics as skm

from hft_search.exceptions import SpecError, SpecIssue

logger = logging.getLogger(__name__)


def _f1(labels: np.ndarray, probs: np.ndarray) -> float:
    """Binary F1 of class 1; macro F1 when there are more than two classes."""
    average = "binary" if probs.shape[1] == 2 else "macro"
    return skm.f1_score(labels, probs.argmax(1), average=average, zero_division=0)


def _roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        logger.warning("roc_auc is undefined on labels of a single class; scoring nan")
        return float("nan")
    if probs.shape[1] == 2:
        return skm.roc_auc_score(labels, probs[:, 1])
    return skm.roc_auc_score(labels, probs, multi_class="ovr", labels=np.arange(probs.shape[1]))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda labels, probs: skm.accuracy_score(labels, probs.argmax(1)),
    "f1_macro": lambda labels, probs: skm.f1_score(labels, probs.argmax(1), average="macro", zero_division=0),
    "f1": _f1,
    "mcc": lambda labels, probs: skm.matthews_corrcoef(labels, probs.argmax(1)),
    "roc_auc": _roc_auc,
}


def check_metric(name: str) -> None:
    """Reject an unknown metric name, naming the valid ones."""
    if name not in METRICS:
        raise SpecError([SpecIssue("cv.metric", f"unknown metric {name!r}; use one of {', '.join(METRICS)}")])


def compute_metric(name: str, labels: np.ndarray | torch.Tensor, probs: np.ndarray | torch.Tensor) -> float:
    """Score class probabilities ``probs`` [n, num_labels] against integer ``labels`` [n]."""
    check_metric(name)
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    probs = probs.float().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    return float(METRICS[name](labels, probs))
