"""Plain-text and dict views of a study, read through Optuna's public API (for ``status``, ``best``, ``run``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hft_search.baseline import (
    baseline_trials,
    is_baseline,
    lift_label,
    lift_of,
    lift_warning,
    reference_baseline,
)
from hft_search.confirm import describe_confirmation, stored_confirmation
from hft_search.exceptions import ModelError, SpecError, SpecIssue, StorageError
from hft_search.spec import StudySpec, check_against_layers, load_spec

_KEY_PARAMS = ("training.learning_rate", "freeze.layers", "importance.threshold", "distill.alpha",
               "distill.temperature", "lora.r")


def validate(path: str | Path, *, check_model: bool = True) -> StudySpec:
    """Load a spec and, unless told not to, check it against the model's config: the family (inferred into
    ``model.family``, or checked when the spec names one), layer counts, input length, LoRA rank and targets,
    and that a given teacher checkpoint loads. What passes here does not fail every trial later."""
    spec = load_spec(path)
    if not check_model:
        return spec
    from hft_search.models import load_config, model_info

    info = model_info(spec.model.name, spec.model.revision)
    if spec.model.family not in (None, info.family):
        raise SpecError([SpecIssue("model.family", f"{spec.model.family!r}, but {spec.model.name} is a "
                                   f"{info.label} model ({info.family!r}); fix model.family or drop it")],
                        str(path))
    check_against_layers(spec, info.num_layers, max_positions=info.max_positions, hidden_size=info.hidden_size,
                         block_modules=info.block_modules, source=str(path))
    teacher = spec.fixed.get("distill.teacher")
    if isinstance(teacher, str):
        try:
            load_config(teacher)
        except ModelError as error:
            raise SpecError([SpecIssue("fixed.distill.teacher", str(error))], str(path)) from None
    return spec.model_copy(update={"model": spec.model.model_copy(update={"family": info.family})})


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def value_with_std(value: float, std: object) -> str:
    """``0.8123 ± 0.0150``: a mean fold score and its spread over the folds, as every view shows it (the
    spread is left out when it was not recorded)."""
    return f"{value:.4f}" + (f" ± {std:.4f}" if isinstance(std, (int, float)) else "")


def _value(trial: FrozenTrial) -> str:
    if trial.values is None:
        return "-"
    head = value_with_std(trial.values[0], trial.user_attrs.get("score_std"))
    return " / ".join([head, *(f"{v:.4g}" for v in trial.values[1:])])


def trials_table(study: optuna.Study) -> str:
    """One line per trial: number, state, value ± std (the search's CV), the confirmed CV of the trials in the
    confirmation round, lift over the tuned baseline (on the search's folds, computed now), trainable %, key
    params, failure reason."""
    reference = reference_baseline(study)
    confirmation = stored_confirmation(study)
    rows = [("#", "state", "value ± std", "confirmed", "lift", "trainable %", "params", "reason")]
    for trial in study.get_trials(deepcopy=False):
        fraction = trial.user_attrs.get("trainable_fraction")
        params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()
                          if k in _KEY_PARAMS or k.endswith(".enabled"))
        confirmed = confirmation.candidate(trial.number) if confirmation is not None else None
        rows.append((str(trial.number), trial.state.name, _value(trial),
                     "-" if confirmed is None or confirmed.mean is None else f"{confirmed.mean:.4f}"
                     + (" (winner)" if trial.number == confirmation.winner else ""),
                     lift_label(trial, reference),
                     f"{100 * fraction:.1f}" if isinstance(fraction, float) else "-", params,
                     trial.user_attrs.get("fail_reason", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)) + "  " + row[-1]
             for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def pick_trial(study: optuna.Study, trial_number: int | None) -> FrozenTrial:
    """The given trial, else the winner of the confirmation round, else the search's best; for
    multi-objective studies a Pareto trial must be named."""
    from hft_search.study import best_trial

    if trial_number is None:
        confirmation = stored_confirmation(study) if len(study.directions) == 1 else None
        if confirmation is None or confirmation.winner is None:
            return best_trial(study)
        trial_number = confirmation.winner
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    trial = trials.get(trial_number)
    if trial is None or trial.state != TrialState.COMPLETE:
        complete = [n for n, t in trials.items() if t.state == TrialState.COMPLETE]
        raise StorageError(f"trial {trial_number} of study {study.study_name!r} is not a completed trial; "
                           f"completed: {', '.join(map(str, complete)) or 'none'}")
    return trial


def best_summary(study: optuna.Study, trial_number: int | None = None) -> dict[str, Any]:
    """The best (or given) trial as a plain dict: value ± std, fold scores, params, provenance."""
    trial = pick_trial(study, trial_number)
    attrs = trial.user_attrs
    baseline = reference_baseline(study)
    lift = lift_of(trial, baseline)
    return {
        "study": study.study_name,
        "trial": trial.number,
        "values": list(trial.values),
        "search_value": trial.values[0],
        "confirmation": confirmation_summary(study, trial),
        "metric": attrs.get("metric"),
        "score_mean": attrs.get("score_mean"),
        "score_std": attrs.get("score_std"),
        "fold_scores": attrs.get("fold_scores"),
        "trainable_fraction": attrs.get("trainable_fraction"),
        "trainable_params": attrs.get("trainable_params"),
        "params": dict(trial.params),
        "baseline_trial": None if baseline is None else baseline.number,
        "baseline_trials": [t.number for t in baseline_trials(study)],
        "lift": None if lift is None else lift.to_attr(),
        "lift_warning": lift_warning(trial, baseline),
        "provenance": {k: attrs.get(k) for k in ("data_fingerprint", "device", "seeds", "versions",
                                                  "fold_times_s", "peak_memory_mb", "importance_cut",
                                                  "teacher_scores")},
    }


def confirmation_summary(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any] | None:
    """What the confirmation round says of ``trial``: its confirmed CV next to the search's, the winner's
    curse, and the round's winner and verdict; None when the trial was not in the latest round."""
    confirmation = stored_confirmation(study)
    candidate = confirmation.candidate(trial.number) if confirmation is not None else None
    if candidate is None:
        return None
    return {"confirmed_value": candidate.mean, "confirmed_std": candidate.std, "fold_scores": candidate.fold_scores,
            "winners_curse": candidate.winners_curse, "failure": candidate.failure,
            "winner": confirmation.winner, "verdict": confirmation.verdict, "baseline": confirmation.baseline,
            "compared": confirmation.compared,
            "lift": None if confirmation.lift is None else confirmation.lift.to_attr(),
            "p_adjusted": confirmation.p_adjusted, "resampling": confirmation.resampling,
            "searched_trials": confirmation.searched_trials, "created": confirmation.created}


def _baseline_lines(study: optuna.Study, best: FrozenTrial) -> list[str]:
    """The tuned baseline and the search's best trial's lift over it on the search's folds, with a plain
    warning when it is not better."""
    baseline = reference_baseline(study)
    if baseline is None:
        return ["no completed baseline trial (study.baseline: false, or it has not run): no lift to show"]
    rates = sorted(t.user_attrs.get("config", {}).get("training.learning_rate") or 0.0 for t in baseline_trials(study)
                   if t.state == TrialState.COMPLETE)
    rate = baseline.user_attrs.get("config", {}).get("training.learning_rate")
    lines = [f"tuned baseline: trial {baseline.number}, the plain full fine-tune at learning rate {_fmt(rate)} (the "
             f"best of {len(rates)} swept: {', '.join(_fmt(r) for r in rates)}): "
             f"{best.user_attrs.get('metric', 'value')} {_value(baseline)}"]
    lift = lift_of(best, baseline)
    if lift is not None:
        lines.append(f"lift of trial {best.number} over it on the search's folds: {lift.text()}")
    warning = lift_warning(best, baseline)
    if warning and stored_confirmation(study) is None:
        lines.append(f"warning: {warning}")
    return lines


def describe_best(study: optuna.Study, storage_url: str | None = None) -> str:
    """What ``run`` prints at the end: counts, the best trial with its fold scores, and the storage."""
    from hft_search.storage import mask_url
    from hft_search.workers import baseline_runs, counted_trials

    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        if not is_baseline(trial):
            states[trial.state.name] = states.get(trial.state.name, 0) + 1
    sweep = baseline_runs(study)
    lines = [f"study {study.study_name!r}: {counted_trials(study)} counted trials "
             f"({', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items()))})"
             + (f" + {sweep} baseline trial(s) outside n_trials" if sweep else "")]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        lines.append("no completed trial yet")
    elif len(study.directions) > 1:
        lines.append("Pareto front (score, second objective):")
        lines += [f"  trial {t.number}: {_value(t)}  {t.params}" for t in study.best_trials]
    else:
        best = study.best_trial
        folds = ", ".join(f"{s:.4f}" for s in best.user_attrs.get("fold_scores", []) if not math.isnan(s))
        fraction = best.user_attrs.get("trainable_fraction")
        lines.append(f"search's best: trial {best.number}: {best.user_attrs.get('metric', 'value')} {_value(best)}  "
                     f"folds [{folds}]"
                     + (f"  trainable {100 * fraction:.1f}%" if isinstance(fraction, float) else ""))
        lines += [f"  {k} = {_fmt(v)}" for k, v in best.params.items()]
        lines += _baseline_lines(study, best)
        confirmation = stored_confirmation(study)
        if confirmation is not None:
            lines += describe_confirmation(confirmation, study)
    if storage_url:
        lines.append(f"stored in {mask_url(storage_url)} (study {study.study_name!r})")
    return "\n".join(lines)
