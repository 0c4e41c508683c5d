"""Studies for the report and dashboard tests, with the attributes of docs/user_attrs.md.

Trials are added with ``optuna.create_trial`` + ``study.add_trial`` rather than by running the objective: a
report reads only what a study stores, and this way every test builds the exact study it needs in
milliseconds, including states (pruned, failed, running) that a real run produces only by chance.
"""

from __future__ import annotations

import math
import random
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

TOTAL_PARAMS = 22_700_000

SPACE: dict[str, BaseDistribution] = {
    "training.learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
    "freeze.layers": IntDistribution(0, 6),
    "importance.enabled": CategoricalDistribution((True, False)),
    "importance.threshold": FloatDistribution(0.0, 0.95),
    "importance.score": CategoricalDistribution(("grad_norm", "fisher", "grad_x_weight")),
    "distill.enabled": CategoricalDistribution((True, False)),
    "distill.alpha": FloatDistribution(0.0, 1.0),
    "distill.temperature": FloatDistribution(1.0, 8.0),
}
"""A conditional space as the objective suggests it: group knobs appear only where ``<group>.enabled``."""

VERSIONS = {
    "hft_search": "0.1.0",
    "torch": "2.13.0",
    "transformers": "5.23.0",
    "optuna": "5.0.0",
    "peft": "0.21.0",
    "python": "3.11.7",
}


def study_attrs(metric: str = "accuracy", objectives: str = "score") -> dict[str, Any]:
    """Study attributes as ``hft_search.study`` writes them."""
    return {
        "spec": {"name": "reports-test", "cv": {"folds": 3, "metric": metric}, "search_space": {}},
        "spec_hash": "0123456789abcdef",
        "metric": metric,
        "objectives": objectives,
        "data_fingerprint": "d4t4f1n63rpr1n7",
        "hft_search_version": "0.1.0",
    }


def sample_params(rng: random.Random) -> dict[str, Any]:
    """One point of :data:`SPACE`, conditional knobs only where their group is on."""
    params: dict[str, Any] = {
        "training.learning_rate": 10 ** rng.uniform(-5, -3),
        "freeze.layers": rng.randint(0, 6),
        "importance.enabled": rng.random() < 0.6,
        "distill.enabled": rng.random() < 0.6,
    }
    if params["importance.enabled"]:
        params["importance.threshold"] = rng.uniform(0.0, 0.95)
        params["importance.score"] = rng.choice(["grad_norm", "fisher", "grad_x_weight"])
    if params["distill.enabled"]:
        params["distill.alpha"] = rng.uniform(0.0, 1.0)
        params["distill.temperature"] = rng.uniform(1.0, 8.0)
    return params


def trial_attrs(params: dict[str, Any], fold_scores: list[float], seed: int, **extra: Any) -> dict[str, Any]:
    """Trial attributes as ``CVObjective`` writes them."""
    frozen = params.get("freeze.layers", 0) / 6
    kept = 1 - params.get("importance.threshold", 0.0) if params.get("importance.enabled") else 1.0
    fraction = max(0.001, (1 - frozen) * kept)
    trainable = int(TOTAL_PARAMS * fraction)
    mean = sum(fold_scores) / len(fold_scores) if fold_scores else 0.0
    std = (sum((s - mean) ** 2 for s in fold_scores) / len(fold_scores)) ** 0.5 if fold_scores else 0.0
    attrs = {
        "fold_scores": fold_scores,
        "score_mean": mean,
        "score_std": std,
        "metric": "accuracy",
        "trainable_params": trainable,
        "total_params": TOTAL_PARAMS,
        "trainable_fraction": trainable / TOTAL_PARAMS,
        "student_params": TOTAL_PARAMS,
        "importance_cut": 1e-4 * params["importance.threshold"] if "importance.threshold" in params else None,
        "teacher_scores": [0.9, 0.91, 0.89] if params.get("distill.enabled") else None,
        "fold_times_s": [12.5 + i for i in range(len(fold_scores))],
        "peak_memory_mb": 812.5,
        "device": "cpu",
        "seeds": [seed * 1000 + f for f in range(len(fold_scores))],
        "versions": VERSIONS,
        "data_fingerprint": "d4t4f1n63rpr1n7",
        "config": {"training.epochs": 2, "training.batch_size": 32, **params},
    }
    return {**attrs, **extra}


def add_trial(
    study: optuna.Study,
    params: dict[str, Any],
    fold_scores: list[float],
    state: TrialState = TrialState.COMPLETE,
    **extra_attrs: Any,
) -> None:
    """Add one trial the way the objective leaves it: values, per-fold reports and user attributes."""
    distributions = {name: SPACE[name] for name in params}
    attrs = trial_attrs(params, fold_scores, seed=len(study.trials), **extra_attrs)
    values = None
    if state == TrialState.COMPLETE:
        values = [attrs["score_mean"]]
        if len(study.directions) == 2:
            values.append(attrs["trainable_fraction"])
    study.add_trial(
        optuna.create_trial(
            state=state,
            values=values,
            params=params,
            distributions=distributions,
            user_attrs=attrs,
            intermediate_values=dict(enumerate(fold_scores)),
        )
    )


def fold_scores_for(params: dict[str, Any], rng: random.Random, folds: int = 3) -> list[float]:
    """Plausible accuracies: better with a moderate learning rate, a little worse when training less."""
    lr_term = -0.05 * abs(-4.0 - math.log10(params["training.learning_rate"]))
    base = 0.86 + lr_term - 0.01 * params["freeze.layers"] + 0.02 * params.get("distill.alpha", 0.0)
    return [round(min(0.99, base + rng.gauss(0, 0.015)), 4) for _ in range(folds)]


def create_hybrid_study(
    storage: str | optuna.storages.BaseStorage,
    name: str = "hybrid",
    n_complete: int = 14,
    directions: tuple[str, ...] = ("maximize",),
    seed: int = 0,
    **attr_overrides: Any,
) -> optuna.Study:
    """A realistic study: ``n_complete`` finished trials, one pruned, one failed, one running."""
    study = optuna.create_study(storage=storage, study_name=name, directions=list(directions))
    objectives = "score+trainable_fraction" if len(directions) == 2 else "score"
    for key, value in {**study_attrs(objectives=objectives), **attr_overrides}.items():
        study.set_user_attr(key, value)
    rng = random.Random(seed)
    for _ in range(n_complete):
        params = sample_params(rng)
        add_trial(study, params, fold_scores_for(params, rng))
    params = sample_params(rng)
    add_trial(
        study,
        params,
        fold_scores_for(params, rng)[:2],
        TrialState.PRUNED,
        fail_reason="pruned after fold 2 (Wilcoxon)",
    )
    add_trial(study, sample_params(rng), [], TrialState.FAIL, fail_reason="out of memory in fold 1")
    params = sample_params(rng)
    add_trial(study, params, fold_scores_for(params, rng)[:1], TrialState.RUNNING)
    return study


def final_model_attr() -> dict[str, Any]:
    """The ``final_model`` study attribute as ``hft-search train`` writes it."""
    report = {
        "negative": {"precision": 0.9, "recall": 0.88, "f1-score": 0.89, "support": 50},
        "positive": {"precision": 0.88, "recall": 0.9, "f1-score": 0.89, "support": 50},
        "accuracy": 0.89,
        "macro avg": {"precision": 0.89, "recall": 0.89, "f1-score": 0.89, "support": 100},
        "weighted avg": {"precision": 0.89, "recall": 0.89, "f1-score": 0.89, "support": 100},
    }
    return {
        "path": "models/hybrid",
        "metrics": {
            "accuracy": 0.89,
            "f1_macro": 0.89,
            "classification_report": report,
            "confusion_matrix": [[44, 6], [5, 45]],
            "labels": ["negative", "positive"],
        },
        "quantized": None,
    }
