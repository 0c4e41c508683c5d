"""The figures written here because Optuna's do not fit a hybrid search: parallel coordinates that keep trials
whose group was switched off, the Pareto front of score against trainable fraction, and the fold spread of the
best trials (is the best better, or only luckier on its folds?).

Every user-supplied string is escaped through :func:`hft_search.reports._escape.plotly_text`, as in the
figures Optuna draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from hft_search.reports._common import (
    Figure,
    complete_trials,
    fmt,
    maximized,
    message_figure,
    percent,
    ranked,
    score_text,
    study_metric,
)
from hft_search.reports._escape import plotly_text
from hft_search.reports.studies import score
from hft_search.spec import SWITCHABLE_GROUPS

TOP_TRIALS = 10
"""How many of the best trials the fold-spread figure shows."""

OFF = "off"
"""Label of a conditional knob in a trial where its group was switched off."""


def _hybrid_knobs(trials: Iterable[FrozenTrial]) -> list[str]:
    names = sorted({name for trial in trials for name in trial.params})
    hybrid = [name for name in names if name.split(".", 1)[0] in SWITCHABLE_GROUPS]
    return hybrid or names


def _distribution(name: str, trials: Sequence[FrozenTrial]) -> BaseDistribution:
    return next(trial.distributions[name] for trial in trials if name in trial.distributions)


def _categorical_dimension(name: str, choices: Sequence[Any], trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    labels = [fmt(choice) for choice in choices] + [OFF]
    off = len(choices)
    values = [choices.index(trial.params[name]) if name in trial.params else off for trial in trials]
    return {
        "label": plotly_text(name),
        "values": values,
        "tickvals": list(range(len(labels))),
        "ticktext": labels,
        "range": [0, off],
    }


def _numeric_dimension(
    name: str, dist: FloatDistribution | IntDistribution, trials: Sequence[FrozenTrial]
) -> dict[str, Any]:
    """A numeric axis over the knob's searched range (log10 for log knobs), with "off" just below it."""
    scale = math.log10 if dist.log else float
    low, high = scale(dist.low), scale(dist.high)
    off = low - 0.1 * (high - low)
    ticks = [low + (high - low) * i / 4 for i in range(5)]
    labels = [fmt(10**tick if dist.log else tick) for tick in ticks]
    values = [scale(trial.params[name]) if name in trial.params else off for trial in trials]
    return {
        "label": plotly_text(name + (" (log)" if dist.log else "")),
        "values": values,
        "range": [off, high],
        "tickvals": [off, *ticks],
        "ticktext": [OFF, *labels],
    }


def parallel_coordinates(study: optuna.Study) -> Figure:
    """The hybrid knobs of every finished trial, coloured by score.

    Written here rather than with Optuna's, which drops every trial that lacks one of the plotted parameters:
    in a conditional search space that is most trials. A knob of a group switched off is drawn at "off".
    """
    title = "Parallel coordinates of the hybrid knobs"
    complete = complete_trials(study)
    knobs = _hybrid_knobs(complete)
    if not complete or not knobs:
        message = "No finished trial yet." if not complete else "The study searches no parameter."
        return message_figure(title, message)
    dimensions = []
    for name in knobs:
        dist = _distribution(name, complete)
        if isinstance(dist, CategoricalDistribution):
            dimensions.append(_categorical_dimension(name, list(dist.choices), complete))
        else:
            dimensions.append(_numeric_dimension(name, dist, complete))
    scores = [score(trial) for trial in complete]
    dimensions.append({"label": plotly_text(study_metric(study)), "values": scores})
    figure = go.Figure(
        go.Parcoords(
            dimensions=dimensions,
            line={
                "color": scores,
                "colorscale": "Viridis",
                "reversescale": not maximized(study),
                "showscale": True,
                "colorbar": {"title": {"text": plotly_text(study_metric(study))}},
            },
        )
    )
    figure.update_layout(title=plotly_text(title), margin={"l": 80, "r": 80, "t": 90, "b": 30})
    return figure


def pareto_trials(trials: Sequence[FrozenTrial], maximize: bool) -> list[FrozenTrial]:
    """Trials not dominated in (score, trainable fraction): no other trial scores better while training less.

    Sorted by trainable fraction, so the front can be drawn as a line.
    """
    sign = 1.0 if maximize else -1.0
    ordered = sorted(trials, key=lambda t: (t.user_attrs["trainable_fraction"], -sign * score(t), t.number))
    front: list[FrozenTrial] = []
    for trial in ordered:
        if not front or sign * score(trial) > sign * score(front[-1]):
            front.append(trial)
    return front


def _pareto_trace(trials: Sequence[FrozenTrial], name: str, marker: dict[str, Any], line: bool) -> go.Scatter:
    return go.Scatter(
        x=[100 * trial.user_attrs["trainable_fraction"] for trial in trials],
        y=[score(trial) for trial in trials],
        error_y={
            "type": "data",
            "array": [trial.user_attrs.get("score_std", 0.0) for trial in trials],
            "thickness": 1,
        },
        mode="lines+markers" if line else "markers",
        line={"shape": "hv"},
        marker=marker,
        name=name,
        text=[
            f"trial #{trial.number}<br>{score_text(trial)}<br>trainable "
            f"{percent(trial.user_attrs['trainable_fraction'])}"
            for trial in trials
        ],
        hoverinfo="text",
    )


def pareto_front(study: optuna.Study) -> Figure:
    """Score against the percentage of trainable parameters, Pareto-optimal trials highlighted and joined."""
    title = "Score against trainable parameters (Pareto front highlighted)"
    points = [trial for trial in complete_trials(study) if "trainable_fraction" in trial.user_attrs]
    if not points:
        return message_figure(title, "No finished trial with a recorded trainable fraction yet.")
    front = pareto_trials(points, maximized(study))
    others = [trial for trial in points if trial not in front]
    figure = go.Figure(
        [
            _pareto_trace(others, "dominated", {"color": "#b0b7c3", "size": 8}, line=False),
            _pareto_trace(front, "Pareto front", {"color": "#d62728", "size": 11}, line=True),
        ]
    )
    figure.update_layout(
        title=plotly_text(title),
        xaxis={"title": "trainable parameters (%)", "type": "log"},
        yaxis={"title": plotly_text(study_metric(study))},
    )
    return figure


def fold_spread(study: optuna.Study, top: int = TOP_TRIALS) -> Figure:
    """The fold scores of the ``top`` best trials: is the best trial better, or only luckier on its folds?"""
    title = f"Fold scores of the {top} best trials"
    best = [trial for trial in ranked(study) if trial.user_attrs.get("fold_scores")][:top]
    if not best:
        return message_figure(title, "No finished trial with fold scores yet.")
    figure = go.Figure(
        [
            go.Box(
                y=trial.user_attrs["fold_scores"],
                name=f"#{trial.number}",
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                boxmean=True,
            )
            for trial in best
        ]
    )
    figure.update_layout(
        title=plotly_text(title),
        xaxis={"title": "trial (best first)"},
        yaxis={"title": plotly_text(study_metric(study))},
        showlegend=False,
    )
    return figure
