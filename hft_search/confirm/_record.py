"""The record of a confirmation round, as stored in a study, and its text: what every reader shows.

``status``, ``best``, the report and ``export`` read it through :func:`stored_confirmation` (the study user
attribute :data:`CONFIRMATION_ATTR`); :mod:`hft_search.confirm._round` writes it. Nothing here imports the
training code, so a report is drawn without it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hft_search.attrs import CONFIRMATION_ATTR
from hft_search.baseline import is_baseline
from hft_search.comparison import Lift, folds_text


@dataclass
class Candidate:
    """One configuration of the round: its search score and its scores on the fresh folds."""

    trial: int
    baseline: bool
    search_value: float
    search_std: float | None
    fold_scores: list[float] = field(default_factory=list)
    fold_sizes: list[list[int]] = field(default_factory=list)
    failure: str | None = None

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.fold_scores)) if self.fold_scores and self.failure is None else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.fold_scores)) if self.mean is not None else None

    @property
    def winners_curse(self) -> float | None:
        """Search CV − confirmed CV: how much the search's own estimate was inflated by selection."""
        return None if self.mean is None else self.search_value - self.mean


@dataclass
class Confirmation:
    """A confirmation round as stored in the study (see the module docstring)."""

    resampling: dict[str, Any]
    candidates: list[Candidate]
    winner: int | None  # trial number of the best confirmed mean (the baseline's, when it wins)
    baseline: int | None  # the reference baseline trial, None in a study without baseline
    compared: int | None  # the best confirmed searched configuration, whose lift is tested
    lift: Lift | None  # its lift over the baseline on the fresh folds
    p_adjusted: float | None  # lift.p_value × searched candidates (Bonferroni), at most 1
    verdict: str  # better / worse / not separated; no baseline (none in the study); not compared (failed)
    searched_trials: int  # counted trials of the study when the round ran
    metric: str
    created: str

    @property
    def winner_candidate(self) -> Candidate | None:
        return next((c for c in self.candidates if c.trial == self.winner), None)

    def candidate(self, trial: int) -> Candidate | None:
        return next((c for c in self.candidates if c.trial == trial), None)

    def to_attr(self) -> dict[str, Any]:
        body = asdict(self)
        body["lift"] = None if self.lift is None else self.lift.to_attr()
        return body

    @classmethod
    def from_attr(cls, value: Any) -> Confirmation | None:
        if not isinstance(value, dict):
            return None
        body = dict(value)
        body["candidates"] = [Candidate(**c) for c in body["candidates"]]
        body["lift"] = Lift.from_attr(body.get("lift"))
        return cls(**body)


def candidates(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best distinct COMPLETE searched configurations (a repeat of a configuration counts once)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not is_baseline(t) and t.values and "config" in t.user_attrs]
    picked, seen = [], set()
    for trial in sorted(done, key=lambda t: (-t.values[0], t.number)):
        key = json.dumps(trial.user_attrs["config"], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            picked.append(trial)
        if len(picked) == top:
            break
    return picked


def stored_confirmation(study: optuna.Study) -> Confirmation | None:
    """The latest confirmation round of a study, or None."""
    return Confirmation.from_attr(study.user_attrs.get(CONFIRMATION_ATTR))


def _score(mean: float | None, std: float | None) -> str:
    return "failed" if mean is None or std is None else f"{mean:.4f} ± {std:.4f}"


def verdict_text(confirmation: Confirmation) -> str:
    """One line: the round's verdict and the lift it rests on, with the test named."""
    lift, base = confirmation.lift, confirmation.baseline
    if confirmation.verdict == "no baseline":
        return "verdict: no tuned baseline in this study (study.baseline: false): no lift to test"
    if lift is None:
        return f"verdict: not compared: the tuned baseline (trial {base}) or every candidate failed on the fresh folds"
    n = sum(not c.baseline for c in confirmation.candidates)
    test = lift.text()
    if lift.p_value is not None and n > 1:
        test = f"{test[:-1]}, × {n} candidates (Bonferroni): {confirmation.p_adjusted:.3g})"
    meaning = {"better": "better than", "worse": "worse than",
               "not separated": "not separated from"}[confirmation.verdict]
    line = f"verdict: trial {confirmation.compared} is {meaning} the tuned baseline (trial {base}): lift {test}"
    winner = confirmation.winner_candidate
    if winner is not None and winner.baseline:
        line += "; the tuned baseline scores highest on the fresh folds: the plain full fine-tune wins"
    elif confirmation.verdict == "not separated":
        line += "; the difference may be fold noise (more folds or study.confirm.repeats sharpen the test)"
    return line


def describe_confirmation(confirmation: Confirmation, study: optuna.Study | None = None) -> list[str]:
    """The round as text: the fresh folds, one row per configuration (search CV next to confirmed CV and the
    winner's curse), the winner and the verdict; a note when the study has grown since."""
    res = confirmation.resampling
    seeds = res["fold_seeds"]
    lines = [f"confirmation on fresh folds ({folds_text(len(seeds), res['repeats'])}, split seed(s) "
             f"{', '.join(map(str, res['split_seeds']))}, training seeds {seeds[0]}-{seeds[-1]}; the search never "
             "used them):"]
    rows = [("trial", "", "search CV", "confirmed CV", "winner's curse")]
    for c in confirmation.candidates:
        curse = c.winners_curse
        rows.append((str(c.trial), "baseline" if c.baseline else "searched",
                     _score(c.search_value, c.search_std if c.search_std is not None else 0.0),
                     _score(c.mean, c.std) if c.failure is None else f"failed: {c.failure}",
                     "-" if curse is None else f"{curse:+.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    winner = confirmation.winner_candidate
    if winner is not None:
        role = "the tuned baseline, " if winner.baseline else ""
        lines.append(f"winner: trial {winner.trial} ({role}confirmed {confirmation.metric} "
                     f"{_score(winner.mean, winner.std)}; search CV {winner.search_value:.4f}, winner's curse "
                     f"{winner.winners_curse:+.4f})")
    lines.append(verdict_text(confirmation))
    if study is not None and is_stale(confirmation, study):
        lines.append(f"note: the study's top configurations changed since this round (run when it had "
                     f"{confirmation.searched_trials} searched trials): run `hft-search confirm --study "
                     f"{study.study_name}` again")
    return lines


def is_stale(confirmation: Confirmation, study: optuna.Study) -> bool:
    """Whether the study's best distinct configurations are no longer the ones the round confirmed."""
    searched = {c.trial for c in confirmation.candidates if not c.baseline}
    return {t.number for t in candidates(study, len(searched))} != searched
