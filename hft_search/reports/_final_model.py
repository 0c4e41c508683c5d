"""Figures of the final model that ``hft-search train`` fitted and scored on the test split.

``train`` records the model's folder and test metrics in the study attribute ``final_model``; the report shows
them only when it is there (:func:`has_final_model`), so a study that was searched but never trained gets no
empty figures. Each figure names the model's folder and test scores under its title, so a reader knows which
model the numbers belong to.
"""

from __future__ import annotations

from typing import Any

import optuna
import plotly.graph_objects as go

from hft_search.reports._common import Figure, fmt, message_figure
from hft_search.reports._escape import plotly_text
from hft_search.reports._tables import table


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
    figure.update_layout(title={"subtitle": {"text": plotly_text(" · ".join([str(final.get("path", "?")), *scores]))}})
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
            rows.append((plotly_text(label), *(fmt(entry.get(column, "")) for column in columns)))
        else:  # sklearn's "accuracy" entry is a bare number
            rows.append((plotly_text(label), "", "", fmt(entry), ""))
    figure = table(
        "Final model: classification report", ["label", *columns], list(zip(*rows, strict=True)), [3, 2, 2, 2, 2]
    )
    return _with_final_subtitle(figure, study)


def confusion_matrix(study: optuna.Study) -> Figure:
    """Counts of true label (rows) × predicted label (columns) of the final model on the test split."""
    metrics = _final_metrics(study)
    if metrics is None or not metrics.get("confusion_matrix"):
        return message_figure("Confusion matrix", "No final model yet: run `hft-search train`.")
    matrix = metrics["confusion_matrix"]
    labels = [plotly_text(label) for label in metrics.get("labels") or range(len(matrix))]
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
