"""The figures Optuna draws (history, importances, contours), drawn on a display copy of the study.

Optuna puts parameter names, values and every user attribute into its hover texts, and Plotly reads markup in
them; a stored study is never changed for a report, so Optuna draws from :func:`display_copy`, an in-memory
copy with every user-supplied string escaped (``<script>`` shows as text) and only short attributes kept (a
hover is not the whole resolved configuration). Where Optuna's figure needs a study it cannot handle (too few
trials, a knob never searched) the function returns a message figure instead of raising.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from hft_search._optuna_compat import IN_MEMORY_STORAGE_LOGGER
from hft_search.reports._common import (
    Figure,
    complete_trials,
    maximized,
    message_figure,
    no_finished_trial,
    study_metric,
)
from hft_search.reports._escape import plotly_text
from hft_search.reports.studies import score

HOVER_ATTRS = ("score_std", "trainable_fraction", "fail_reason")
"""Trial attributes kept in the display copy, hence in Optuna's hover texts; the rest are in the tables."""

DISPLAY_COPY_PREFIX = "hft-search display copy of "


# ------------------------------------------------------------------------------------------------------------
# The display copy that Optuna's own figures are drawn from.
# ------------------------------------------------------------------------------------------------------------


def _escaped_choice(choice: Any) -> Any:
    return plotly_text(choice) if isinstance(choice, str) else choice


def _escaped_param(value: Any, distribution: BaseDistribution) -> tuple[Any, BaseDistribution]:
    if not isinstance(distribution, CategoricalDistribution):
        return value, distribution
    choices = tuple(_escaped_choice(choice) for choice in distribution.choices)
    return _escaped_choice(value), CategoricalDistribution(choices)


def _display_trial(trial: FrozenTrial) -> FrozenTrial:
    params, distributions = {}, {}
    for name, value in trial.params.items():
        params[plotly_text(name)], distributions[plotly_text(name)] = _escaped_param(value, trial.distributions[name])
    attrs = {key: _escaped_choice(trial.user_attrs[key]) for key in HOVER_ATTRS if key in trial.user_attrs}
    return optuna.create_trial(
        state=trial.state,
        values=trial.values if trial.state == TrialState.COMPLETE else None,
        params=params,
        distributions=distributions,
        user_attrs=attrs,
        intermediate_values=dict(trial.intermediate_values),
    )


class _HideDisplayCopies(logging.Filter):
    """Drops Optuna's "new study created in memory" line for display copies: they are no news to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return DISPLAY_COPY_PREFIX not in record.getMessage()


def display_copy(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of ``study`` for ``optuna.visualization``: names and values escaped, short hovers.

    All trials are copied in order, so trial numbers stay the same as in the stored study.
    """
    in_memory_log = logging.getLogger(IN_MEMORY_STORAGE_LOGGER)
    if not any(isinstance(existing, _HideDisplayCopies) for existing in in_memory_log.filters):
        in_memory_log.addFilter(_HideDisplayCopies())
    copy = optuna.create_study(directions=study.directions, study_name=DISPLAY_COPY_PREFIX + study.study_name)
    copy.add_trials([_display_trial(trial) for trial in study.get_trials(deepcopy=False)])
    return copy


# ------------------------------------------------------------------------------------------------------------
# Figures drawn by Optuna.
# ------------------------------------------------------------------------------------------------------------


def optimization_history(study: optuna.Study) -> Figure:
    """Score of every finished trial by trial number, with the best score so far as a step line."""
    complete = complete_trials(study)
    if not complete:
        return no_finished_trial("Optimization history")
    figure = optuna.visualization.plot_optimization_history(
        display_copy(study), target=score, target_name=plotly_text(study_metric(study))
    )
    pick = max if maximized(study) else min
    best, best_so_far = None, []
    for trial in complete:
        best = score(trial) if best is None else pick(best, score(trial))
        best_so_far.append(best)
    figure.add_trace(
        go.Scatter(
            x=[trial.number for trial in complete],
            y=best_so_far,
            mode="lines",
            line_shape="hv",
            name="best so far",
        )
    )
    return figure


def _varying_in_every_trial(trials: Sequence[FrozenTrial]) -> list[str]:
    """Parameters present in every trial and taking two or more values: what importances are computed on."""
    common = set.intersection(*(set(trial.params) for trial in trials)) if trials else set()
    return sorted(name for name in common if len({repr(trial.params[name]) for trial in trials}) > 1)


def _importance_target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """None (the study's own direction) for one objective; else the score, negated when maximised.

    Optuna's default evaluator (PED-ANOVA) explains what makes a *user-given* target low, so a maximised score
    is handed over negated; the figure shows importances only, never the target's values.
    """
    if len(study.directions) == 1:
        return None
    return (lambda trial: -score(trial)) if maximized(study) else score


def param_importances(study: optuna.Study) -> Figure:
    """Optuna's parameter importances of the knobs searched in every trial.

    Conditional knobs (a group switched on in some trials only) are left out, because the importance
    evaluators need each parameter in every trial; the figure names them, so their absence is no surprise.
    """
    title = "Parameter importances"
    complete = complete_trials(study)
    if len(complete) < 2:
        return message_figure(title, f"Needs at least 2 finished trials; this study has {len(complete)}.")
    varying = _varying_in_every_trial(complete)
    if not varying:
        return message_figure(title, "No parameter is searched in every finished trial with two or more values.")
    with warnings.catch_warnings():  # PED-ANOVA warns that a given target is minimised: handled above
        warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes", UserWarning)
        figure = optuna.visualization.plot_param_importances(
            display_copy(study),
            params=[plotly_text(name) for name in varying],
            target=_importance_target(study),
            target_name=plotly_text(study_metric(study)),
        )
    conditional = sorted({name for trial in complete for name in trial.params} - set(varying))
    if conditional:
        note = "Not in every trial or constant, left out: " + ", ".join(conditional)
        figure.update_layout(title={"subtitle": {"text": plotly_text(note)}})
    return figure


def knob_contour(study: optuna.Study, x: str, y: str) -> Figure:
    """Optuna's contour of the score over knobs ``x`` × ``y``, from the finished trials that searched both."""
    title = f"{x} × {y}"
    searched = {name for trial in study.get_trials(deepcopy=False) for name in trial.params}
    missing = [name for name in (x, y) if name not in searched]
    if missing:
        verb = "was" if len(missing) == 1 else "were"
        return message_figure(title, f"{' and '.join(missing)} {verb} not searched in this study.")
    both = [trial for trial in complete_trials(study) if x in trial.params and y in trial.params]
    few = [name for name in (x, y) if len({trial.params[name] for trial in both}) < 2]
    if few:
        return message_figure(
            title,
            f"Needs two or more values of {' and '.join(few)} among finished trials that searched both.",
        )
    figure = optuna.visualization.plot_contour(
        display_copy(study),
        params=[plotly_text(x), plotly_text(y)],
        target=score,
        target_name=plotly_text(study_metric(study)),
    )
    figure.update_layout(title=plotly_text(f"Contour: {title}"))
    return figure


def importance_freeze_contour(study: optuna.Study) -> Figure:
    """Score over the importance quantile × the number of frozen layers: two ways of training less, mixed."""
    return knob_contour(study, "importance.threshold", "freeze.layers")


def distillation_contour(study: optuna.Study) -> Figure:
    """Score over the distillation weight α × the temperature T."""
    return knob_contour(study, "distill.alpha", "distill.temperature")
