"""Read studies for display: load one by name, rank its trials, summarise every study of a storage.

Reports and the dashboard read a study only through Optuna's public API and the attributes listed in
``docs/user_attrs.md``; they never import the training code, so a report can be drawn on a machine that has
the database but not the GPU stack. Storages are opened by :func:`hft_search.storage.make_storage` (the same
URLs as every other command) and shown only through :func:`hft_search.storage.mask_url`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


def metric_name(study_attrs: Mapping[str, Any]) -> str:
    """The score's name (``accuracy``, ``f1_macro``...) from the study attributes; "score" when absent."""
    return str(study_attrs.get("metric", "score"))


def score(trial: FrozenTrial) -> float:
    """The mean fold score of a COMPLETE trial: its value, or its first value in a multi-objective study."""
    return trial.values[0]


def ranked_trials(trials: Sequence[FrozenTrial], direction: StudyDirection) -> list[FrozenTrial]:
    """COMPLETE trials, best score first (ties: lower trial number first).

    For a multi-objective study this ranks by the score alone, which is what "best configuration" means to a
    reader of the report; the Pareto figure shows the trade-off with the trainable fraction.
    """
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    return sorted(complete, key=lambda trial: (sign * score(trial), trial.number))


def revision(trials: Sequence[FrozenTrial], study_attrs: Mapping[str, Any]) -> str:
    """A short hash that changes whenever what a report shows changes.

    The live dashboard compares it with the revision it drew last and fetches the figures only when it moved.
    A trial counts by its state, its completion time and its number of reported folds (so a running trial
    shows progress fold by fold); the study counts by its attributes (a final model appearing, for example).
    """
    state = [
        [trial.number, trial.state.name, str(trial.datetime_complete), len(trial.intermediate_values)]
        for trial in trials
    ]
    body = json.dumps([state, study_attrs], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StudySummary:
    """One line of the dashboard's study list."""

    name: str
    trials: int
    complete: int
    pruned: int
    failed: int
    running: int
    best: float | None
    metric: str
    revision: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(storage: BaseStorage) -> list[StudySummary]:
    """A summary of every study in ``storage``, in creation order."""
    summaries = []
    for frozen in storage.get_all_studies():
        study_id = storage.get_study_id_from_name(frozen.study_name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
        best = ranked_trials(trials, frozen.directions[0])
        summaries.append(
            StudySummary(
                name=frozen.study_name,
                trials=len(trials),
                complete=sum(trial.state == TrialState.COMPLETE for trial in trials),
                pruned=sum(trial.state == TrialState.PRUNED for trial in trials),
                failed=sum(trial.state == TrialState.FAIL for trial in trials),
                running=sum(trial.state == TrialState.RUNNING for trial in trials),
                best=score(best[0]) if best else None,
                metric=metric_name(frozen.user_attrs),
                revision=revision(trials, frozen.user_attrs),
            )
        )
    return summaries
