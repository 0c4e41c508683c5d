"""The report's tables: the best-configuration card and the table of every trial, and the Plotly table they
(and the final model's classification report) are drawn with.

Tables are where a reader checks the verdict: the tuned baseline, each trial's lift over it on the search's
folds, and the confirmation round's score on fresh folds sit beside the search's own score, so the optimistic
search maximum is never shown alone. Every cell is escaped before it reaches :func:`table`.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from hft_search.baseline import lift_label, lift_of, lift_warning, reference_baseline
from hft_search.confirm import stored_confirmation, verdict_text
from hft_search.reports._common import (
    Figure,
    fmt,
    message_figure,
    no_finished_trial,
    percent,
    ranked,
    score_text,
    study_metric,
)
from hft_search.reports._escape import plotly_text
from hft_search.summary import value_with_std

TABLE_ROW_PX = 28
TABLE_MAX_PX = 900
TABLE_TITLE_PX = 110


def table(title: str, header: Sequence[str], columns: Sequence[Sequence[str]], widths: Sequence[int]) -> Figure:
    """A Plotly table; every cell must already be escaped (built with :func:`fmt` or ``plotly_text``)."""
    rows = len(columns[0]) if columns else 0
    figure = go.Figure(
        go.Table(
            columnwidth=list(widths),
            header={
                "values": [f"<b>{plotly_text(name)}</b>" for name in header],
                "align": "left",
                "fill_color": "#e8ecf4",
            },
            cells={"values": [list(column) for column in columns], "align": "left", "height": TABLE_ROW_PX},
        )
    )
    figure.update_layout(
        title=plotly_text(title),
        height=min(TABLE_MAX_PX, TABLE_TITLE_PX + TABLE_ROW_PX * (rows + 1)),
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
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
    baseline = reference_baseline(study)
    rows = []
    if baseline is None:
        rows.append(("baseline", "none completed (no lift to show)"))
    else:
        rows.append(("tuned baseline", f"trial #{baseline.number}, {score_text(baseline)}"))
        lift = lift_of(best, baseline)
        if lift is not None:
            rows.append(("lift over baseline (search folds)", plotly_text(lift.text())))
    confirmation = stored_confirmation(study)
    candidate = confirmation.candidate(best.number) if confirmation is not None else None
    if candidate is not None and candidate.mean is not None:
        rows += [("search CV", score_text(best)),
                 ("confirmed CV (fresh folds)", value_with_std(candidate.mean, candidate.std)),
                 ("winner's curse (search − confirmed)", f"{candidate.winners_curse:+.4f}"),
                 ("confirmation", plotly_text(verdict_text(confirmation).removeprefix("verdict: ")))]
    elif baseline is not None:
        warning = lift_warning(best, baseline)
        if warning:
            rows.append(("warning", plotly_text(warning)))
    return rows


def best_configuration(study: optuna.Study) -> Figure:
    """The best trial as a card: score ± std, fold scores, trainable %, every parameter, provenance. The best
    is the winner of the confirmation round when the study has one, else the search's best."""
    by_score = ranked(study)
    title = "Best configuration"
    if not by_score:
        return no_finished_trial(title)
    confirmation = stored_confirmation(study)
    winner = None if confirmation is None else confirmation.winner
    best = next((t for t in by_score if t.number == winner), by_score[0])
    attrs = best.user_attrs
    folds = attrs.get("fold_scores") or []
    trainable = attrs.get("trainable_params"), attrs.get("total_params")
    rows = [
        ("study", plotly_text(study.study_name)),
        ("trial", f"#{best.number}"),
        (plotly_text(study_metric(study)), score_text(best)),
        ("fold scores", ", ".join(f"{s:.4f}" for s in folds) or "—"),
        (
            "trainable",
            f"{percent(attrs.get('trainable_fraction'))} ({fmt(trainable[0])} of {fmt(trainable[1])})"
            if None not in trainable
            else percent(attrs.get("trainable_fraction")),
        ),
    ]
    rows += _lift_rows(study, best)
    rows += [
        (plotly_text(name), fmt(value))
        for name, value in (
            ("student parameters", attrs.get("student_params")),
            ("importance cut", attrs.get("importance_cut")),
        )
        if value is not None
    ]
    rows += [(plotly_text(name), fmt(value)) for name, value in sorted(best.params.items())]
    rows += _provenance_rows(study, best)
    names, values = zip(*rows, strict=True)
    return table(f"{title}: trial #{best.number}", ["", "value"], [names, values], [1, 3])


def trials_figure(study: optuna.Study) -> Figure:
    """Every trial with its state, score, lift over the baseline, trainable %, duration, parameters and, for
    failures, the reason."""
    trials = study.get_trials(deepcopy=False)
    title = "Trials"
    if not trials:
        return message_figure(title, "This study has no trial yet.")
    header = ["trial", "state", study_metric(study), "confirmed", "lift", "folds", "trainable", "time (s)",
              "parameters", "reason"]
    reference = reference_baseline(study)
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
            score_text(trial) if trial.state == TrialState.COMPLETE else "—",
            confirmed(trial),
            plotly_text(lift_label(trial, reference)),
            str(len(trial.user_attrs.get("fold_scores") or trial.intermediate_values)),
            percent(trial.user_attrs.get("trainable_fraction")),
            f"{trial.duration.total_seconds():.1f}" if trial.duration else "—",
            "<br>".join(f"{plotly_text(name)} = {fmt(value)}" for name, value in sorted(trial.params.items())),
            plotly_text(trial.user_attrs.get("fail_reason", "")),
        )
        for trial in trials
    ]
    return table(f"{title} ({len(trials)})", header, list(zip(*rows, strict=True)), [1, 2, 3, 3, 2, 1, 2, 1, 6, 4])
