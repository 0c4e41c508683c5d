"""Anytime curves of searches (best CV score so far against wall time and fold-epochs), comparisons between
them, and their Plotly figure: the measuring half of ``search_quality``.

Why fold-epochs: a trial's cost is the epochs it trained summed over its folds (a pruned trial stops early,
early stopping ends a fold early), so methods given the same number of fold-epochs were given the same
compute, whatever their pruning. Wall time is reported next to it, since frozen configurations train faster
per epoch than a full fine-tune.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hft_search.workers import has_verdict

MAJORITY_MARGIN = 0.01
"""A trial whose every fold scores within this of the majority-class share learned nothing."""


def fold_epochs(trial: FrozenTrial, fallback: int) -> int:
    """The epochs a trial trained over all its folds (``fallback`` when it failed before recording any)."""
    return int(trial.user_attrs.get("fold_epochs") or fallback)


def curve(study: optuna.Study, origin: float, fallback_epochs: int) -> list[dict[str, Any]]:
    """One point per trial with a verdict (the baseline sweep's too: it is part of a method's cost), in order of
    completion: elapsed seconds since ``origin`` (a POSIX time), fold-epochs spent so far, and the best CV score
    so far."""
    trials = sorted((t for t in study.get_trials(deepcopy=False) if has_verdict(t) and t.datetime_complete),
                    key=lambda t: t.datetime_complete)
    points, best, spent = [], float("-inf"), 0
    for trial in trials:
        spent += fold_epochs(trial, fallback_epochs)
        if trial.value is not None:
            best = max(best, trial.value)
        points.append({"trial": trial.number, "state": trial.state.name, "value": trial.value,
                       "elapsed_s": trial.datetime_complete.timestamp() - origin, "fold_epochs": spent,
                       "best_so_far": best, "trainable_fraction": trial.user_attrs.get("trainable_fraction"),
                       "learning_rate_effective": trial.user_attrs.get("learning_rate_effective")})
    return points


def majority_trials(study: optuna.Study, majority: float) -> int:
    """Trials that never left the majority class: every fold within :data:`MAJORITY_MARGIN` of its share."""
    stuck = 0
    for trial in study.get_trials(deepcopy=False):
        scores = trial.user_attrs.get("fold_scores") or []
        if has_verdict(trial) and scores and max(scores) <= majority + MAJORITY_MARGIN:
            stuck += 1
    return stuck


def time_to_reach(points: list[dict[str, Any]], score: float) -> float | None:
    """Elapsed seconds when a curve's best first reached ``score``; None when it never did."""
    return next((p["elapsed_s"] for p in points if p["best_so_far"] >= score), None)


def share_to_reach(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> float | None:
    """Our time to reach their final best, as a share of their whole wall time (None: never reached)."""
    if not ours or not theirs:
        return None
    reached = time_to_reach(ours, theirs[-1]["best_so_far"])
    return None if reached is None else reached / max(theirs[-1]["elapsed_s"], 1e-9)


def median(values: list[float | None]) -> float | None:
    """The median, a missing value (never reached) counting as worse than any; None when the median is one."""
    middle = statistics.median([math.inf if v is None else v for v in values]) if values else math.inf
    return None if math.isinf(middle) else middle


def figure(runs: dict[str, list[dict[str, Any]]], title: str, path: Path) -> Path:
    """Anytime curves (best CV so far against wall time), one line per method and seed, as an HTML file."""
    import plotly.graph_objects as go

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    fig = go.Figure()
    for index, (method, seeds) in enumerate(runs.items()):
        for number, run in enumerate(seeds):
            points = run["curve"]
            fig.add_trace(go.Scatter(
                x=[p["elapsed_s"] for p in points], y=[p["best_so_far"] for p in points], mode="lines+markers",
                line={"shape": "hv", "color": colors[index % len(colors)]}, name=f"{method} (seed {run['seed']})",
                legendgroup=method, showlegend=True, opacity=1.0 if number == 0 else 0.6))
    fig.update_layout(title=title, xaxis_title="wall time of the search (s)", yaxis_title="best CV accuracy so far",
                      template="plotly_white")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs="cdn")
    return path
