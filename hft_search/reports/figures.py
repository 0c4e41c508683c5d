"""Plotly figures of a hybrid fine-tuning study, one function per figure.

Every function takes an :class:`optuna.Study` and returns a :class:`plotly.graph_objects.Figure`, always: when
a figure cannot be drawn yet (no finished trial, a knob the study never searched, no final model) it returns a
small figure that says why, so a report of a young or failed study is a readable page rather than a crash.

Where Optuna already draws a figure (history, importances, contours) it does, on a *display copy* of the study
(:func:`display_copy`). Plotly reads a few HTML-like tags (``<b>``, ``<br>``, ``<a href>``) in every string
it draws, and Optuna puts parameter values and all user attributes into hover texts; the copy escapes every
user-supplied string (so ``<script>`` shows as text) and keeps only short attributes (so a hover is not the
whole resolved configuration). The hybrid-specific figures (parallel coordinates with "off" for conditional
knobs, Pareto front over the trainable fraction, fold spread, the best-configuration card, the trials table,
the final model's classification report) are written here and escape through :func:`text` the same way.
"""

from __future__ import annotations

import html
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hft_search._optuna_compat import IN_MEMORY_STORAGE_LOGGER
from hft_search.baseline import lift_label, lift_of, lift_warning, reference_baseline
from hft_search.confirm import stored_confirmation, verdict_text
from hft_search.reports.studies import metric_name, ranked_trials, score
from hft_search.spec import SWITCHABLE_GROUPS
from hft_search.summary import value_with_std

TOP_TRIALS = 10
"""How many of the best trials the fold-spread figure shows."""

HOVER_ATTRS = ("score_std", "trainable_fraction", "fail_reason")
"""Trial attributes kept in the display copy, hence in Optuna's hover texts; the rest are in the tables."""

DISPLAY_COPY_PREFIX = "hft-search display copy of "

OFF = "off"
"""Label of a conditional knob in a trial where its group was switched off."""

TABLE_ROW_PX = 28
TABLE_MAX_PX = 900
TABLE_TITLE_PX = 110

Figure = go.Figure


# ------------------------------------------------------------------------------------------------------------
# Escaping, formatting and small shared pieces.
# ------------------------------------------------------------------------------------------------------------


def text(value: object) -> str:
    """``value`` as a string Plotly draws literally: ``&``, ``<`` and ``>`` escaped.

    Plotly decodes ``&amp;``, ``&lt;`` and ``&gt;`` but not ``&quot;``, so quotes are left as they are.
    """
    return html.escape(str(value), quote=False)


def fmt(value: object) -> str:
    """A compact, escaped display of a number or any other value (4 significant digits for floats)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return text(value)


def message_figure(title: str, message: str) -> Figure:
    """A figure with only a title and a sentence: what is shown where a figure cannot be drawn, and why."""
    figure = go.Figure()
    figure.update_layout(
        title=text(title),
        height=220,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": text(message),
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


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _metric(study: optuna.Study) -> str:
    return metric_name(study.user_attrs)


def _maximize(study: optuna.Study) -> bool:
    return study.directions[0] == StudyDirection.MAXIMIZE


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    return ranked_trials(study.get_trials(deepcopy=False), study.directions[0])


def _no_finished_trial(title: str) -> Figure:
    return message_figure(title, "No finished trial yet: this figure appears when the first trial completes.")


def _percent(fraction: object) -> str:
    return f"{100 * fraction:.3g} %" if isinstance(fraction, (int, float)) else "—"


def _score_text(trial: FrozenTrial) -> str:
    return value_with_std(score(trial), trial.user_attrs.get("score_std"))


def _table(title: str, header: Sequence[str], columns: Sequence[Sequence[str]], widths: Sequence[int]) -> Figure:
    """A Plotly table; every cell must already be escaped (built with :func:`fmt` or :func:`text`)."""
    rows = len(columns[0]) if columns else 0
    figure = go.Figure(
        go.Table(
            columnwidth=list(widths),
            header={
                "values": [f"<b>{text(name)}</b>" for name in header],
                "align": "left",
                "fill_color": "#e8ecf4",
            },
            cells={"values": [list(column) for column in columns], "align": "left", "height": TABLE_ROW_PX},
        )
    )
    figure.update_layout(
        title=text(title),
        height=min(TABLE_MAX_PX, TABLE_TITLE_PX + TABLE_ROW_PX * (rows + 1)),
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
    )
    return figure


# ------------------------------------------------------------------------------------------------------------
# The display copy that Optuna's own figures are drawn from.
# ------------------------------------------------------------------------------------------------------------


def _escaped_choice(choice: Any) -> Any:
    return text(choice) if isinstance(choice, str) else choice


def _escaped_param(value: Any, distribution: BaseDistribution) -> tuple[Any, BaseDistribution]:
    if not isinstance(distribution, CategoricalDistribution):
        return value, distribution
    choices = tuple(_escaped_choice(choice) for choice in distribution.choices)
    return _escaped_choice(value), CategoricalDistribution(choices)


def _display_trial(trial: FrozenTrial) -> FrozenTrial:
    params, distributions = {}, {}
    for name, value in trial.params.items():
        params[text(name)], distributions[text(name)] = _escaped_param(value, trial.distributions[name])
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
    complete = _complete(study)
    if not complete:
        return _no_finished_trial("Optimization history")
    figure = optuna.visualization.plot_optimization_history(
        display_copy(study), target=score, target_name=text(_metric(study))
    )
    pick = max if _maximize(study) else min
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
    return (lambda trial: -score(trial)) if _maximize(study) else score


def param_importances(study: optuna.Study) -> Figure:
    """Optuna's parameter importances of the knobs searched in every trial.

    Conditional knobs (a group switched on in some trials only) are left out, because the importance
    evaluators need each parameter in every trial; the figure names them, so their absence is no surprise.
    """
    title = "Parameter importances"
    complete = _complete(study)
    if len(complete) < 2:
        return message_figure(title, f"Needs at least 2 finished trials; this study has {len(complete)}.")
    varying = _varying_in_every_trial(complete)
    if not varying:
        return message_figure(title, "No parameter is searched in every finished trial with two or more values.")
    with warnings.catch_warnings():  # PED-ANOVA warns that a given target is minimised: handled above
        warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes", UserWarning)
        figure = optuna.visualization.plot_param_importances(
            display_copy(study),
            params=[text(name) for name in varying],
            target=_importance_target(study),
            target_name=text(_metric(study)),
        )
    conditional = sorted({name for trial in complete for name in trial.params} - set(varying))
    if conditional:
        note = "Not in every trial or constant, left out: " + ", ".join(conditional)
        figure.update_layout(title={"subtitle": {"text": text(note)}})
    return figure


def knob_contour(study: optuna.Study, x: str, y: str) -> Figure:
    """Optuna's contour of the score over knobs ``x`` × ``y``, from the finished trials that searched both."""
    title = f"{x} × {y}"
    searched = {name for trial in study.get_trials(deepcopy=False) for name in trial.params}
    missing = [name for name in (x, y) if name not in searched]
    if missing:
        verb = "was" if len(missing) == 1 else "were"
        return message_figure(title, f"{' and '.join(missing)} {verb} not searched in this study.")
    both = [trial for trial in _complete(study) if x in trial.params and y in trial.params]
    few = [name for name in (x, y) if len({trial.params[name] for trial in both}) < 2]
    if few:
        return message_figure(
            title,
            f"Needs two or more values of {' and '.join(few)} among finished trials that searched both.",
        )
    figure = optuna.visualization.plot_contour(
        display_copy(study), params=[text(x), text(y)], target=score, target_name=text(_metric(study))
    )
    figure.update_layout(title=text(f"Contour: {title}"))
    return figure


def importance_freeze_contour(study: optuna.Study) -> Figure:
    """Score over the importance quantile × the number of frozen layers: two ways of training less, mixed."""
    return knob_contour(study, "importance.threshold", "freeze.layers")


def distillation_contour(study: optuna.Study) -> Figure:
    """Score over the distillation weight α × the temperature T."""
    return knob_contour(study, "distill.alpha", "distill.temperature")


# ------------------------------------------------------------------------------------------------------------
# Hybrid-specific figures.
# ------------------------------------------------------------------------------------------------------------


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
        "label": text(name),
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
        "label": text(name + (" (log)" if dist.log else "")),
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
    complete = _complete(study)
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
    dimensions.append({"label": text(_metric(study)), "values": scores})
    figure = go.Figure(
        go.Parcoords(
            dimensions=dimensions,
            line={
                "color": scores,
                "colorscale": "Viridis",
                "reversescale": not _maximize(study),
                "showscale": True,
                "colorbar": {"title": {"text": text(_metric(study))}},
            },
        )
    )
    figure.update_layout(title=text(title), margin={"l": 80, "r": 80, "t": 90, "b": 30})
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
            f"trial #{trial.number}<br>{_score_text(trial)}<br>trainable "
            f"{_percent(trial.user_attrs['trainable_fraction'])}"
            for trial in trials
        ],
        hoverinfo="text",
    )


def pareto_front(study: optuna.Study) -> Figure:
    """Score against the percentage of trainable parameters, Pareto-optimal trials highlighted and joined."""
    title = "Score against trainable parameters (Pareto front highlighted)"
    points = [trial for trial in _complete(study) if "trainable_fraction" in trial.user_attrs]
    if not points:
        return message_figure(title, "No finished trial with a recorded trainable fraction yet.")
    front = pareto_trials(points, _maximize(study))
    others = [trial for trial in points if trial not in front]
    figure = go.Figure(
        [
            _pareto_trace(others, "dominated", {"color": "#b0b7c3", "size": 8}, line=False),
            _pareto_trace(front, "Pareto front", {"color": "#d62728", "size": 11}, line=True),
        ]
    )
    figure.update_layout(
        title=text(title),
        xaxis={"title": "trainable parameters (%)", "type": "log"},
        yaxis={"title": text(_metric(study))},
    )
    return figure


def fold_spread(study: optuna.Study, top: int = TOP_TRIALS) -> Figure:
    """The fold scores of the ``top`` best trials: is the best trial better, or only luckier on its folds?"""
    title = f"Fold scores of the {top} best trials"
    ranked = [trial for trial in _ranked(study) if trial.user_attrs.get("fold_scores")][:top]
    if not ranked:
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
            for trial in ranked
        ]
    )
    figure.update_layout(
        title=text(title),
        xaxis={"title": "trial (best first)"},
        yaxis={"title": text(_metric(study))},
        showlegend=False,
    )
    return figure


def _provenance_rows(study: optuna.Study, trial: FrozenTrial) -> list[tuple[str, str]]:
    attrs = trial.user_attrs
    versions = attrs.get("versions")
    rows = [
        ("spec hash", study.user_attrs.get("spec_hash")),
        ("data fingerprint", attrs.get("data_fingerprint", study.user_attrs.get("data_fingerprint"))),
        (
            "versions",
            ", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, dict) else None,
        ),
        ("device", attrs.get("device")),
        ("fold seeds", attrs.get("seeds")),
        ("finished", trial.datetime_complete.isoformat(" ", "seconds") if trial.datetime_complete else None),
        ("fold times (s)", ", ".join(f"{t:.1f}" for t in attrs.get("fold_times_s") or []) or None),
        ("peak memory (MB)", attrs.get("peak_memory_mb")),
    ]
    return [(name, fmt(value)) for name, value in rows if value is not None]


def _lift_rows(study: optuna.Study, best: FrozenTrial) -> list[tuple[str, str]]:
    """The tuned baseline, the best trial's lift over it on the search's folds, and the confirmation round:
    the confirmed score next to the search's, the winner's curse and the verdict (a warning when the trial is
    not shown to be better)."""
    baseline, maximize = reference_baseline(study), _maximize(study)
    rows = []
    if baseline is None:
        rows.append(("baseline", "none completed (no lift to show)"))
    else:
        rows.append(("tuned baseline", f"trial #{baseline.number}, {_score_text(baseline)}"))
        lift = lift_of(best, baseline, maximize=maximize)
        if lift is not None:
            rows.append(("lift over baseline (search folds)", text(lift.text())))
    confirmation = stored_confirmation(study)
    candidate = confirmation.candidate(best.number) if confirmation is not None else None
    if candidate is not None and candidate.mean is not None:
        rows += [("search CV", _score_text(best)),
                 ("confirmed CV (fresh folds)", value_with_std(candidate.mean, candidate.std)),
                 ("winner's curse (search − confirmed)", f"{candidate.winners_curse:+.4f}"),
                 ("confirmation", text(verdict_text(confirmation).removeprefix("verdict: ")))]
    elif baseline is not None:
        warning = lift_warning(best, baseline, maximize=maximize)
        if warning:
            rows.append(("warning", text(warning)))
    return rows


def best_configuration(study: optuna.Study) -> Figure:
    """The best trial as a card: score ± std, fold scores, trainable %, every parameter, provenance. The best
    is the winner of the confirmation round when the study has one, else the search's best."""
    ranked = _ranked(study)
    title = "Best configuration"
    if not ranked:
        return _no_finished_trial(title)
    confirmation = stored_confirmation(study)
    winner = None if confirmation is None else confirmation.winner
    best = next((t for t in ranked if t.number == winner), ranked[0])
    attrs = best.user_attrs
    folds = attrs.get("fold_scores") or []
    trainable = attrs.get("trainable_params"), attrs.get("total_params")
    rows = [
        ("study", text(study.study_name)),
        ("trial", f"#{best.number}"),
        (text(_metric(study)), _score_text(best)),
        ("fold scores", ", ".join(f"{s:.4f}" for s in folds) or "—"),
        (
            "trainable",
            f"{_percent(attrs.get('trainable_fraction'))} ({fmt(trainable[0])} of {fmt(trainable[1])})"
            if None not in trainable
            else _percent(attrs.get("trainable_fraction")),
        ),
    ]
    rows += _lift_rows(study, best)
    rows += [
        (text(name), fmt(value))
        for name, value in (
            ("student parameters", attrs.get("student_params")),
            ("importance cut", attrs.get("importance_cut")),
        )
        if value is not None
    ]
    rows += [(text(name), fmt(value)) for name, value in sorted(best.params.items())]
    rows += _provenance_rows(study, best)
    names, values = zip(*rows, strict=True)
    return _table(f"{title}: trial #{best.number}", ["", "value"], [names, values], [1, 3])


def trials_figure(study: optuna.Study) -> Figure:
    """Every trial with its state, score, lift over the baseline, trainable %, duration, parameters and, for
    failures, the reason."""
    trials = study.get_trials(deepcopy=False)
    title = "Trials"
    if not trials:
        return message_figure(title, "This study has no trial yet.")
    header = ["trial", "state", _metric(study), "confirmed", "lift", "folds", "trainable", "time (s)", "parameters",
              "reason"]
    reference, maximize = reference_baseline(study), _maximize(study)
    confirmation = stored_confirmation(study)

    def confirmed(trial: FrozenTrial) -> str:
        candidate = confirmation.candidate(trial.number) if confirmation is not None else None
        if candidate is None or candidate.mean is None:
            return "—"
        return value_with_std(candidate.mean, candidate.std) + (" (winner)" if trial.number == confirmation.winner
                                                                else "")

    rows = [
        (
            str(trial.number),
            trial.state.name,
            _score_text(trial) if trial.state == TrialState.COMPLETE else "—",
            confirmed(trial),
            text(lift_label(trial, reference, maximize=maximize)),
            str(len(trial.user_attrs.get("fold_scores") or trial.intermediate_values)),
            _percent(trial.user_attrs.get("trainable_fraction")),
            f"{trial.duration.total_seconds():.1f}" if trial.duration else "—",
            "<br>".join(f"{text(name)} = {fmt(value)}" for name, value in sorted(trial.params.items())),
            text(trial.user_attrs.get("fail_reason", "")),
        )
        for trial in trials
    ]
    return _table(f"{title} ({len(trials)})", header, list(zip(*rows, strict=True)), [1, 2, 3, 3, 2, 1, 2, 1, 6, 4])


# ------------------------------------------------------------------------------------------------------------
# The final model written by `hft-search train`.
# ------------------------------------------------------------------------------------------------------------


def _final_metrics(study: optuna.Study) -> dict[str, Any] | None:
    final = study.user_attrs.get("final_model")
    metrics = final.get("metrics") if isinstance(final, dict) else None
    return metrics if isinstance(metrics, dict) else None


def _with_final_subtitle(figure: Figure, study: optuna.Study) -> Figure:
    """Name the final model's folder and test scores under the figure's title."""
    final = study.user_attrs["final_model"]
    metrics = final["metrics"]
    scores = [
        f"{name} {metrics[name]:.4f}"
        for name in ("accuracy", "f1_macro")
        if isinstance(metrics.get(name), (int, float))
    ]
    figure.update_layout(title={"subtitle": {"text": text(" · ".join([str(final.get("path", "?")), *scores]))}})
    return figure


def has_final_model(study: optuna.Study) -> bool:
    """Whether ``hft-search train`` recorded a final model (with its metrics) on the study."""
    return _final_metrics(study) is not None


def classification_report(study: optuna.Study) -> Figure:
    """Precision, recall, F1 and support per label of the final model on the test split."""
    metrics = _final_metrics(study)
    if metrics is None or not isinstance(metrics.get("classification_report"), dict):
        return message_figure("Classification report", "No final model yet: run `hft-search train`.")
    columns = ("precision", "recall", "f1-score", "support")
    rows = []
    for label, entry in metrics["classification_report"].items():
        if isinstance(entry, dict):
            rows.append((text(label), *(fmt(entry.get(column, "")) for column in columns)))
        else:  # sklearn's "accuracy" entry is a bare number
            rows.append((text(label), "", "", fmt(entry), ""))
    figure = _table(
        "Final model: classification report", ["label", *columns], list(zip(*rows, strict=True)), [3, 2, 2, 2, 2]
    )
    return _with_final_subtitle(figure, study)


def confusion_matrix(study: optuna.Study) -> Figure:
    """Counts of true label (rows) × predicted label (columns) of the final model on the test split."""
    metrics = _final_metrics(study)
    if metrics is None or not metrics.get("confusion_matrix"):
        return message_figure("Confusion matrix", "No final model yet: run `hft-search train`.")
    matrix = metrics["confusion_matrix"]
    labels = [text(label) for label in metrics.get("labels") or range(len(matrix))]
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            colorscale="Blues",
            texttemplate="%{z}",
            hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Final model: confusion matrix",
        xaxis={"title": "predicted", "type": "category"},
        yaxis={"title": "true", "type": "category", "autorange": "reversed"},
    )
    return _with_final_subtitle(figure, study)


# ------------------------------------------------------------------------------------------------------------
# The report's figure list.
# ------------------------------------------------------------------------------------------------------------

FIGURES: dict[str, Callable[[optuna.Study], Figure]] = {
    "best": best_configuration,
    "history": optimization_history,
    "importances": param_importances,
    "parallel": parallel_coordinates,
    "contour-importance-freeze": importance_freeze_contour,
    "contour-distill": distillation_contour,
    "pareto": pareto_front,
    "folds": fold_spread,
    "trials": trials_figure,
}
"""Every study figure, in page order, by the id of its container on the page."""

trials_table = trials_figure
"""The name :func:`trials_figure` had before: :func:`hft_search.summary.trials_table` is the plain-text table."""

FINAL_MODEL_FIGURES: dict[str, Callable[[optuna.Study], Figure]] = {
    "final-report": classification_report,
    "final-confusion": confusion_matrix,
}
"""Figures of the final model, on the page only when the study has one."""


def report_figures(study: optuna.Study) -> dict[str, Figure]:
    """Every figure of the report of ``study``, by container id, in page order."""
    functions = dict(FIGURES)
    if has_final_model(study):
        functions.update(FINAL_MODEL_FIGURES)
    return {key: function(study) for key, function in functions.items()}
