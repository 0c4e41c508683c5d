"""Small pieces every figure module of the report shares: the figure type, number formatting, the message
figure, and the study readings (finished trials, metric, direction, ranking) each figure starts from.

Kept apart so that the Optuna-drawn, hybrid, table and final-model figures read a study the same way and a
figure that cannot be drawn always says why in the same form.
"""

from __future__ import annotations

import optuna
import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hft_search.reports._escape import plotly_text
from hft_search.reports.studies import metric_name, ranked_trials, score
from hft_search.summary import value_with_std

Figure = go.Figure


def fmt(value: object) -> str:
    """A compact, escaped display of a number or any other value (4 significant digits for floats)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return plotly_text(value)


def message_figure(title: str, message: str) -> Figure:
    """A figure with only a title and a sentence: what is shown where a figure cannot be drawn, and why."""
    figure = go.Figure()
    figure.update_layout(
        title=plotly_text(title),
        height=220,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": plotly_text(message),
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 14},
            }
        ],
    )
    return figure


def no_finished_trial(title: str) -> Figure:
    """The message figure of a study that has no COMPLETE trial yet (a young study, not an error)."""
    return message_figure(title, "No finished trial yet: this figure appears when the first trial completes.")


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The COMPLETE trials of ``study``, in trial order: the only ones with a score to draw."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def study_metric(study: optuna.Study) -> str:
    """The score's name for axis titles and table headers (``accuracy``...; "score" when not recorded)."""
    return metric_name(study.user_attrs)


def maximized(study: optuna.Study) -> bool:
    """Whether a higher score is better: decides "best so far", the Pareto front and colour scales."""
    return study.directions[0] == StudyDirection.MAXIMIZE


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials, best score first (see :func:`hft_search.reports.studies.ranked_trials`)."""
    return ranked_trials(study.get_trials(deepcopy=False), study.directions[0])


def percent(fraction: object) -> str:
    """A fraction as a percentage with 3 significant digits; "—" when it was not recorded."""
    return f"{100 * fraction:.3g} %" if isinstance(fraction, (int, float)) else "—"


def score_text(trial: FrozenTrial) -> str:
    """A COMPLETE trial's score ± its fold standard deviation, as every table and hover shows it."""
    return value_with_std(score(trial), trial.user_attrs.get("score_std"))
