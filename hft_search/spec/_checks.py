"""Cross-field validation: combinations of settings that could never run, or whose knobs could never act.

Why after the models: each rule reads settings of several sections or groups at once, which a single field's
validator cannot see; all of them are judged, and every problem is reported with the fields it names and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hft_search.exceptions import SpecIssue
from hft_search.spec._groups import knob_default, knob_names
from hft_search.spec._space import CategoricalDist, FloatDist, out_of_range
from hft_search.spec._study_spec import StudySpec

PRUNER_MIN_FOLDS: dict[str, tuple[int, str]] = {
    "wilcoxon": (5, "the Wilcoxon signed-rank test (p < 0.1) cannot reject with fewer paired fold scores"),
}
"""Pruners that can only ever prune with enough folds: the least number of folds, and why. A new pruner
with such a limit adds one entry here."""

def knob_section(spec: StudySpec, name: str) -> str:
    """The section that sets knob ``name``, as the first part of an issue's path."""
    return "search_space" if name in spec.search_space else "fixed"


def _always_zero(spec: StudySpec, name: str) -> bool:
    """Whether the spec pins a numeric knob to 0 (fixed 0, or explicitly neither searched nor fixed ⇒ default)."""
    bounds = knob_range(spec, name)
    if bounds is None:
        return name not in spec.search_space and knob_default(name) == 0
    return bounds[1] == 0


def cross_checks(spec: StudySpec) -> list[SpecIssue]:
    """Rules that span knobs: combinations that could never run, or whose knobs could never act."""
    issues = []
    options = spec.study
    if options.sampler == "nsga2" and options.objectives == "score":
        issues.append(SpecIssue("study.sampler", "nsga2 is for multi-objective studies; set study.objectives"))
    if options.sampler == "grid":
        bad = [k for k, d in spec.search_space.items() if isinstance(d, FloatDist) and d.step is None]
        if bad:
            issues.append(SpecIssue("study.sampler", "grid needs categorical, int or stepped float knobs; "
                                    f"give a step to: {', '.join(bad)}"))
    if spec.study.sampler == "grid" and (spec.study.enqueue or spec.study.warm_start):
        issues.append(SpecIssue("study.sampler", "the grid sampler runs only its own grid points; remove "
                                "study.enqueue and study.warm_start, or use another sampler"))
    valid = set(knob_names())
    for index, entry in enumerate(spec.study.enqueue):
        for name, value in entry.items():
            path = f"study.enqueue.{index}.{name}"
            if name not in valid:
                issues.append(SpecIssue(path, "unknown knob; use dotted knob names such as training.learning_rate"))
            elif name not in spec.search_space:
                issues.append(SpecIssue(path, "is not searched by this spec (only search_space knobs can be "
                                        "enqueued); add it to search_space or drop it"))
            elif (why := out_of_range(spec.search_space[name], value)) is not None:
                issues.append(SpecIssue(path, why))
    for key in spec.search_space:
        if key.endswith(".enabled") and not isinstance(spec.search_space[key], CategoricalDist):
            issues.append(SpecIssue(f"search_space.{key}", "a group switch must be {categorical: [true, false]}"))
    if spec.provenance is None:  # an exported spec pins a configuration that was scored: it is fit as it is
        issues += _contradictions(spec)
    return issues


def _contradictions(spec: StudySpec) -> list[SpecIssue]:
    """Settings that each make sense alone but together leave a knob without effect or a trial without a point.

    Only settings the spec decides are judged (a group switch that the search decides is never contradictory:
    the trials where it is off simply ignore its knobs). Each message names the fields and the fix.
    """
    issues = []
    on = spec.enabled_groups()
    options = spec.study
    needed = PRUNER_MIN_FOLDS.get(options.pruner)
    if needed is not None and spec.cv.folds < needed[0]:
        issues.append(SpecIssue("study.pruner", f"{options.pruner} with cv.folds={spec.cv.folds} can never prune: "
                                f"{needed[1]}; use cv.folds >= {needed[0]}, or pruner: median or none"))
    if options.objectives == "score+student_params" and on["distill"] is False:
        issues.append(SpecIssue("study.objectives", "score+student_params needs distillation to vary the "
                                "student's size, but the distill group is off; switch it on (search "
                                "distill.student_layers) or use objectives: score"))
    for group, decided in on.items():
        knobs = [k for k in (*spec.search_space, *spec.fixed) if k.startswith(group + ".") and k != f"{group}.enabled"]
        if decided is False and knobs:
            issues.append(SpecIssue(f"fixed.{group}.enabled", f"is false, so {', '.join(knobs)} never act; "
                                    f"remove them or switch the group on"))
    if on["distill"] is not False and _always_zero(spec, "distill.alpha") and _always_zero(spec, "distill.beta"):
        issues.append(SpecIssue("distill.alpha", "distill.alpha and distill.beta are both 0: the loss is 0 and "
                                "nothing trains; give one of them a positive value"))
    fine_tune_knobs = [k for k in (*spec.search_space, *spec.fixed) if k.startswith("distill.teacher_")]
    if spec.fixed.get("distill.teacher") is not None and fine_tune_knobs:
        issues.append(SpecIssue(f"{knob_section(spec, fine_tune_knobs[0])}.{fine_tune_knobs[0]}",
                                f"{', '.join(fine_tune_knobs)} only apply when the teacher is fine-tuned, but "
                                "distill.teacher gives a checkpoint; remove one or the other"))
    if on["lora"] is True and on["freeze"] is False and on["importance"] is True:
        issues.append(SpecIssue("importance.enabled", "LoRA without freeze leaves only the adapters and the "
                                "head trainable, and importance never selects among those, so it has nothing to "
                                "select; switch freeze on (LoRA then adapts the frozen blocks and importance "
                                "masks the others) or switch importance off"))
    if on["lora"] is True and on["freeze"] is True and knob_range(spec, "freeze.layers") in (None, (0, 0)):
        issues.append(SpecIssue("freeze.layers", "is 0 in every trial, and with freeze on LoRA adapts the frozen "
                                "blocks only: no adapter would be added; let freeze.layers be 1 or more, or "
                                "switch freeze off (LoRA then adapts every block)"))
    if spec.data.unlabeled is not None and on["distill"] is False:
        issues.append(SpecIssue("data.unlabeled", "only the distillation student learns from unlabeled text (its "
                                "teacher labels it); switch distill on or remove data.unlabeled"))
    issues += _missing_teacher(spec)
    return issues


def _missing_teacher(spec: StudySpec) -> list[SpecIssue]:
    """A ``distill.teacher`` written as a local path (absolute, ``./``, ``../``, ``~``) must be a folder."""
    if "distill.teacher" in spec.search_space:
        values = spec.search_space["distill.teacher"].endpoints()
        section = "search_space"
    else:
        values, section = [spec.fixed.get("distill.teacher")], "fixed"
    issues = []
    for value in values:
        if isinstance(value, str) and value.startswith(("/", "./", "../", "~")) \
                and not Path(value).expanduser().is_dir():
            issues.append(SpecIssue(f"{section}.distill.teacher", f"teacher checkpoint folder {value} does not "
                                    "exist; check the path (relative paths start at the spec's folder) or drop "
                                    "the knob to fine-tune a teacher"))
    return issues


def knob_range(spec: StudySpec, name: str) -> tuple[Any, Any] | None:
    """The smallest and largest value a spec lets a numeric knob take, or None when it is not set."""
    if name in spec.search_space:
        values = [v for v in spec.search_space[name].endpoints() if isinstance(v, int | float)]
    elif name in spec.fixed and isinstance(spec.fixed[name], int | float):
        values = [spec.fixed[name]]
    else:
        return None
    return (min(values), max(values)) if values else None
