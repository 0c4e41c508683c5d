"""Plotly figures of a hybrid fine-tuning study, one function per figure, and the report's list of them.

Every function takes an :class:`optuna.Study` and returns a :class:`plotly.graph_objects.Figure`, always: when
a figure cannot be drawn yet (no finished trial, a knob the study never searched, no final model) it returns a
small figure that says why, so a report of a young or failed study is a readable page rather than a crash.

The figures live in private modules, one concept each, and are re-exported here:

* :mod:`~hft_search.reports._optuna_figures`: the figures Optuna draws (history, importances, contours), on
  an escaped in-memory :func:`display_copy` of the study;
* :mod:`~hft_search.reports._hybrid_figures`: parallel coordinates with "off" for conditional knobs, the
  Pareto front over the trainable fraction, the fold spread;
* :mod:`~hft_search.reports._tables`: the best-configuration card and the trials table;
* :mod:`~hft_search.reports._final_model`: the final model's classification report and confusion matrix.

Plotly reads a few HTML-like tags (``<b>``, ``<br>``, ``<a href>``) in every string it draws, so every
user-supplied string is escaped with :func:`text` (:func:`hft_search.reports._escape.plotly_text`), the one
place where reports escape.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from hft_search.reports._common import Figure, fmt, message_figure
from hft_search.reports._escape import plotly_text as text
from hft_search.reports._final_model import classification_report, confusion_matrix, has_final_model
from hft_search.reports._hybrid_figures import (
    OFF,
    TOP_TRIALS,
    fold_spread,
    parallel_coordinates,
    pareto_front,
    pareto_trials,
)
from hft_search.reports._optuna_figures import (
    DISPLAY_COPY_PREFIX,
    HOVER_ATTRS,
    display_copy,
    distillation_contour,
    importance_freeze_contour,
    knob_contour,
    optimization_history,
    param_importances,
)
from hft_search.reports._tables import TABLE_MAX_PX, TABLE_ROW_PX, TABLE_TITLE_PX, best_configuration, trials_figure

__all__ = [
    "DISPLAY_COPY_PREFIX",
    "FIGURES",
    "FINAL_MODEL_FIGURES",
    "HOVER_ATTRS",
    "OFF",
    "TABLE_MAX_PX",
    "TABLE_ROW_PX",
    "TABLE_TITLE_PX",
    "TOP_TRIALS",
    "Figure",
    "best_configuration",
    "classification_report",
    "confusion_matrix",
    "display_copy",
    "distillation_contour",
    "fmt",
    "fold_spread",
    "has_final_model",
    "importance_freeze_contour",
    "knob_contour",
    "message_figure",
    "optimization_history",
    "parallel_coordinates",
    "param_importances",
    "pareto_front",
    "pareto_trials",
    "report_figures",
    "text",
    "trials_figure",
]

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
