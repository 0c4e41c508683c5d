"""A trial of a study → a complete, runnable spec with no search space left, and where it came from.

Why every knob goes into ``fixed``: the trial's ``config`` user attribute is the full resolved configuration,
defaults included (the teacher's ``distill.teacher_*`` knobs too). Pinning all of it means a later release that
changes a default cannot silently change what ``hft-search train best.yaml`` fits. A knob the trial's release
did not have is pinned to what that release did: ``training.max_lr_multiplier`` 1 for a trial scored before
learning-rate scaling (it trained at the searched rate, not at up to 10 times it).

Why ``training.epochs`` is pinned to the folds' median best epoch: each fold's score came from its best epoch's
weights (early stopping restores them), while ``train`` has no validation split to stop on. Training the
searched maximum would fit something nobody scored. The searched value stays in the provenance
(``cv_epochs``), which ``hft-search verify`` and ``train``'s fold runs use to cross-validate as the search did.

Which trial: the one named, else the winner of the study's confirmation round (:mod:`hft_search.confirm`: the
search's own maximum is optimistic, the round re-fitted the top configurations on fresh folds), else the best.

The provenance block (study, trial, value ± std, fold scores, versions, data fingerprint, the lift over the tuned
baseline and the confirmation round) travels with the spec into the trained model's ``hft_search.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.trial import FrozenTrial

from hft_search.baseline import lift_of, lift_warning, reference_baseline
from hft_search.confirm import stored_confirmation, verdict_text
from hft_search.exceptions import ExportError
from hft_search.files import check_output, refuse_inputs, write_text_atomic
from hft_search.inputs import spec_inputs, storage_inputs
from hft_search.spec import StudySpec, spec_from_dict
from hft_search.storage import mask_url, resolve_storage_url
from hft_search.study import load_study
from hft_search.summary import confirmation_summary, pick_trial, value_with_std
from hft_search.urls import absolute_file_url

logger = logging.getLogger(__name__)

SpecFormat = Literal["yaml", "json"]


def pareto_table(study: optuna.Study) -> str:
    """The Pareto-optimal trials of a multi-objective study, one line each, to pick one with ``--trial``."""
    lines = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        score = value_with_std(trial.values[0], trial.user_attrs.get("score_std"))
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        lines.append(f"  trial {trial.number}: score {score}, second objective {trial.values[1]:.4g}  {params}")
    return "\n".join(lines) or "  (no completed trial yet)"


def _pick(study: optuna.Study, trial_number: int | None) -> FrozenTrial:
    if trial_number is None and len(study.directions) > 1:
        raise ExportError(f"study {study.study_name!r} is multi-objective: choose a Pareto point with --trial N. "
                          f"Pareto front:\n{pareto_table(study)}")
    trial = pick_trial(study, trial_number)
    if len(study.directions) > 1 and trial.number not in {t.number for t in study.best_trials}:
        logger.warning("trial %d is not on the Pareto front of study %s", trial.number, study.study_name)
    return trial


def final_epochs(best_epochs: list[int]) -> int:
    """The median of the folds' best epochs, a half rounded up."""
    return math.floor(statistics.median(best_epochs) + 0.5)


def provenance(study: optuna.Study, trial: FrozenTrial, storage_url: str | None) -> dict[str, Any]:
    """Where the configuration came from: enough to find the study again and to judge the estimate."""
    attrs = trial.user_attrs
    return {
        "study": study.study_name,
        "storage": mask_url(absolute_file_url(storage_url)) if storage_url else None,
        "trial": trial.number,
        "metric": attrs.get("metric"),
        "value": trial.values[0],
        "std": attrs.get("score_std"),
        "values": list(trial.values) if len(trial.values) > 1 else None,
        "fold_scores": attrs.get("fold_scores"),
        "fold_best_epochs": attrs.get("fold_best_epochs"),
        "seeds": attrs.get("seeds"),
        "teacher": attrs.get("teacher"),
        "teacher_scores": attrs.get("teacher_scores"),
        "trainable_fraction": attrs.get("trainable_fraction"),
        "student_params": attrs.get("student_params"),
        "versions": attrs.get("versions"),
        "torch_threads": attrs.get("torch_threads"),
        "data_fingerprint": attrs.get("data_fingerprint", study.user_attrs.get("data_fingerprint")),
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **baseline_provenance(study, trial),
    }


def baseline_provenance(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    """The tuned baseline, the exported trial's lift over it on the search's folds, the confirmation round
    (``confirmation``: the trial's scores on the fresh folds, the winner, the lift tested there and the verdict),
    and a plain warning (``lift_warning``) when the exported trial is not shown to be better than the tuned
    baseline: by the confirmation round when the trial took part in it, else on the search's folds."""
    baseline = reference_baseline(study)
    lift = lift_of(trial, baseline)
    confirmed = confirmation_summary(study, trial)
    warning = lift_warning(trial, baseline)
    if confirmed is not None:
        warning = confirmed_warning(study, trial)
    if warning:
        logger.warning("%s", warning)
    return {"baseline": None if baseline is None else {"trial": baseline.number, "value": baseline.values[0],
                                                       "fold_scores": baseline.user_attrs.get("fold_scores")},
            "lift": None if lift is None else lift.to_attr(), "confirmation": confirmed, "lift_warning": warning}


def confirmed_warning(study: optuna.Study, trial: FrozenTrial) -> str | None:
    """A plain warning when the confirmation round does not show ``trial`` better than the tuned baseline."""
    confirmation = stored_confirmation(study)
    if confirmation is None or confirmation.verdict == "no baseline":
        return None
    if trial.number != confirmation.winner:
        return (f"trial {trial.number} is not the winner of the confirmation round (trial {confirmation.winner}); "
                f"{verdict_text(confirmation)}")
    if confirmation.verdict == "better" and trial.number == confirmation.compared:
        return None
    return verdict_text(confirmation).removeprefix("verdict: ")


def export_spec(study: optuna.Study, trial_number: int | None = None, *,
                storage_url: str | None = None) -> StudySpec:
    """The best (or the given) trial of ``study`` as a spec whose ``fixed`` holds every knob.

    Raises:
        ExportError: a multi-objective study without ``trial_number`` (the message lists the Pareto front), or
            a study/trial written without the ``spec``/``config`` attributes that ``hft-search run`` stores.
    """
    trial = _pick(study, trial_number)
    stored = study.user_attrs.get("spec")
    config = trial.user_attrs.get("config")
    if stored is None or config is None:
        missing = "study user attribute 'spec'" if stored is None else f"trial {trial.number}'s attribute 'config'"
        raise ExportError(f"study {study.study_name!r} lacks the {missing}; only studies run by hft-search "
                          "(hft-search run / worker) can be exported")
    raw = json.loads(json.dumps(stored))  # a password stored by an older hft-search is masked when dumped
    fixed, origin = dict(config), provenance(study, trial, storage_url)
    if "training.max_lr_multiplier" not in fixed:  # scored before learning-rate scaling: it trained at x1
        fixed["training.max_lr_multiplier"] = 1.0
    best_epochs = trial.user_attrs.get("fold_best_epochs")
    if best_epochs:
        fixed["training.epochs"] = final_epochs(best_epochs)
        origin.update(cv_epochs=config["training.epochs"], final_epochs=fixed["training.epochs"],
                      epochs_note=(f"training.epochs is {fixed['training.epochs']}, the median best epoch of the "
                                   f"folds {best_epochs} (the search ran up to {config['training.epochs']} with "
                                   "early stopping and scored each fold at its best epoch; the final fit follows "
                                   "that run's learning-rate schedule and stops there)"))
    raw.update(name=f"{study.study_name}-trial{trial.number}", search_space={}, fixed=fixed, provenance=origin)
    if trial.user_attrs.get("pooling"):  # the pooling the trial read, not a default that a release may change
        raw["model"] = {**raw.get("model", {}), "pooling": trial.user_attrs["pooling"]}
    # One fixed configuration prunes nothing and seeds nothing: "none" also keeps a study stored with a pruner
    # its folds could not use exportable, and the search's enqueued and warm-start trials named searched knobs.
    raw["study"] = {**raw.get("study", {}), "n_trials": 1, "pruner": "none", "enqueue": [], "warm_start": None,
                    "portfolio": "none"}
    return spec_from_dict(raw, source=f"trial {trial.number} of study {study.study_name!r}")


def spec_text(spec: StudySpec, fmt: SpecFormat = "yaml") -> str:
    """The spec as YAML or JSON; knobs whose value is ``None`` stay in ``fixed`` so they remain pinned."""
    body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)  # passwords masked by their type
    body["fixed"] = spec.model_dump(mode="json")["fixed"]
    if fmt == "json":
        return json.dumps(body, indent=2) + "\n"
    header = ""
    if spec.provenance:
        header = (f"# Exported by hft-search from trial {spec.provenance['trial']} of study "
                  f"{spec.provenance['study']!r}.\n"
                  "# Fit it on all training data: hft-search train THIS_FILE -o models/NAME\n"
                  "# Check the recorded fold scores first: hft-search verify THIS_FILE\n")
        if spec.provenance.get("epochs_note"):
            header += f"# {spec.provenance['epochs_note']}.\n"
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def export_best(study_name: str, storage: str | None, output: str | Path, *, trial: int | None = None,
                fmt: SpecFormat | None = None, force: bool = False) -> StudySpec:
    """Write the best (or given) trial of a stored study to ``output`` as a runnable spec, atomically.

    The format follows ``fmt``, else the file's suffix (``.json`` → JSON, anything else YAML). An existing
    ``output`` is only replaced with ``force``; never the study storage, nor the data, model or teacher of the
    spec written (:mod:`hft_search.inputs`).
    """
    url = resolve_storage_url(storage, None)
    output = check_output(output, force=force, inputs=storage_inputs(url))
    spec = export_spec(load_study(study_name, url), trial, storage_url=url)
    refuse_inputs(output, spec_inputs(spec))
    fmt = fmt or ("json" if output.suffix.lower() == ".json" else "yaml")
    write_text_atomic(output, spec_text(spec, fmt))
    logger.info("exported trial %s of study %s to %s", spec.provenance["trial"], study_name, output)
    return spec
