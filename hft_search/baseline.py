"""The tuned baseline a study is anchored to, and every trial's lift over it.

Why a *tuned* baseline: users run a search to beat what they would do by hand, a plain full fine-tune whose
learning rate they tuned. One full fine-tune at a single rate is a strawman: every searched trial gets its own
rate. So a new study (unless ``study.baseline: false``) starts with a small learning-rate sweep of the plain
full fine-tune (``study.baseline.trials``, default 3): no freezing, importance mask, distillation or LoRA, the
spec's fixed training settings, at rates spread over the searched range on its scale (:func:`sweep_values`:
the centres of equal parts of the range, so one point is the old midpoint baseline). The reference is the
best completed baseline trial (:func:`find_baseline`). Baseline trials are outside the ``n_trials`` budget
(:func:`hft_search.workers.counts`) and marked with the user attribute :data:`BASELINE_ATTR`.

Why every searched knob is written: TPE with ``group=True`` models the parameters that occur together in
trials as one group. A baseline that lacked, say, ``freeze.layers`` while every other trial has it would split
the learning rate and freezing into independent groups, exactly where learning-rate scaling couples them. So
a baseline trial carries every knob a sampled trial of the same shape carries: group switches off (and then,
as in sampled trials, none of that group's knobs), the knobs of groups the spec forces on at their *off*
value (:data:`OFF_VALUES`, clamped into the searched range), and every other knob at the middle of its range.
What the baseline *runs* is still the plain full fine-tune (:func:`baseline_config`, recorded as ``config``).

Lifts are computed whenever they are read (status, best, report, export, the run summary), against the best
completed baseline, with the corrected resampled t-test (:mod:`hft_search.comparison`): trials that finished
before the baseline sweep did get one too, and a better baseline trial found later moves every lift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hft_search.attrs import BASELINE_ATTR
from hft_search.attrs import LIFT_ATTR as LIFT_ATTR  # re-exported: its home before hft_search.attrs
from hft_search.comparison import SIGNIFICANCE, Lift, compute_lift, size_ratio
from hft_search.spec import SWITCHABLE_GROUPS, CategoricalDist, Distribution, FloatDist, HybridConfig, StudySpec

LEARNING_RATE = "training.learning_rate"

OFF_VALUES: dict[str, Any] = {
    "freeze.layers": 0,  # no block frozen
    "freeze.embeddings": False,  # the embeddings trained
    "importance.threshold": 0.0,  # the 0-quantile: no parameter masked
    "distill.alpha": 0.0,  # no soft-label term
    "distill.beta": 1.0,  # the plain cross-entropy
    "distill.student_layers": math.inf,  # the whole model: the top of the range
    "lora.r": 0,  # the smallest adapter: the bottom of the range
    "lora.alpha": 0.0,  # the weakest adapter scale
    "lora.dropout": 0.0,
    "lora.lr_ratio": 1.0,  # LoRA+ off
    "lora.variant": "lora",
    "distill.hidden_weight": 0.0,  # no hidden-state loss
    "distill.student_init": "bottom",
    "training.layer_lr_decay": 1.0,  # soft freezing off
    "training.reinit_layers": 0,
}
"""The value at which a knob of a group the spec forces on changes the plain fine-tune least, clamped into the
searched range (so ``lora.r: 0`` means the range's bottom). Knobs without such a value (a score kind, a
temperature, the teacher's settings) take the middle of their range, as the training knobs do."""
PLAIN_TRAINING = {"training.layer_lr_decay": 1.0, "training.reinit_layers": 0}
"""Training knobs that are hybrid methods themselves (soft freezing): the baseline always runs them off, whatever
its trial's parameters say (a searched range without the off value is written at its nearest end)."""


def sweep_values(dist: Distribution, n: int) -> list[Any]:
    """``n`` values spread over a searched range on its scale: the centres of ``n`` equal parts (geometric on a
    log scale), snapped to the step and deduplicated; for a categorical, ``n`` choices spread over the list.
    ``n = 1`` is the middle of the range."""
    if isinstance(dist, CategoricalDist):
        picks = sorted({min(len(dist.choices) - 1, int((i + 0.5) * len(dist.choices) / n)) for i in range(n)})
        return [dist.choices[i] for i in picks]
    low, high = dist.bounds
    scale = (math.log(low), math.log(high)) if dist.log else (low, high)
    values: list[Any] = []
    for i in range(n):
        point = scale[0] + (i + 0.5) / n * (scale[1] - scale[0])
        value = _snap(dist, math.exp(point) if dist.log else point)
        if value not in values:
            values.append(value)
    return values


def midpoint(dist: Distribution) -> Any:
    """The middle of a searched range (geometric on a log scale); for a categorical, the choice at index
    ``len(choices) // 2``: the middle one of an odd number of choices, the later of the two middle ones of an
    even number (so the second of two)."""
    return sweep_values(dist, 1)[0]


def _snap(dist: Distribution, value: float) -> Any:
    """``value`` clamped into a numeric range and onto its step (integers for an int range)."""
    low, high = dist.bounds
    value = min(max(value, low), high)
    step = dist.step if dist.step is not None else (None if isinstance(dist, FloatDist) else 1)
    if step is not None:
        value = min(low + round((value - low) / step) * step, high)
    return float(value) if isinstance(dist, FloatDist) else int(value)


def off_value(name: str, dist: Distribution) -> Any:
    """What a baseline trial writes for knob ``name`` of a group the spec forces on (see :data:`OFF_VALUES`)."""
    if name not in OFF_VALUES:
        return midpoint(dist)
    value = OFF_VALUES[name]
    if isinstance(dist, CategoricalDist):
        return value if value in dist.choices else midpoint(dist)
    return _snap(dist, value)


def baseline_params(spec: StudySpec) -> list[dict[str, Any]]:
    """The searched knobs of each trial of the baseline sweep, one dict per learning rate (module docstring).

    A spec that does not search the learning rate gets one baseline trial (there is nothing to sweep)."""
    space = spec.search_space
    common: dict[str, Any] = {}
    for group, decided in spec.enabled_groups().items():
        if decided is None:  # the search switches the group: the baseline switches it off where it can
            choices = space[f"{group}.enabled"].choices
            common[f"{group}.enabled"] = False if False in choices else choices[0]
    for name, dist in space.items():
        group = name.split(".", 1)[0]
        off = group in SWITCHABLE_GROUPS and common.get(f"{group}.enabled") is False
        if name != LEARNING_RATE and not name.endswith(".enabled") and not off:
            common[name] = off_value(name, dist)
    if LEARNING_RATE not in space:
        return [common]
    trials = spec.study.baseline.trials if spec.study.baseline else 1
    return [{**common, LEARNING_RATE: rate} for rate in sweep_values(space[LEARNING_RATE], trials)]


def baseline_config(spec: StudySpec, params: Mapping[str, Any] | None = None) -> HybridConfig:
    """The plain full fine-tune: every group off, the fixed training settings, and the searched training knobs
    from ``params`` (a baseline trial's), else the middle of their range; soft freezing (:data:`PLAIN_TRAINING`)
    off."""
    values: dict[str, Any] = {k: v for k, v in spec.fixed.items() if k.startswith("training.")}
    for name, dist in spec.search_space.items():
        if name.startswith("training."):
            values[name] = params[name] if params is not None and name in params else midpoint(dist)
    values.update(PLAIN_TRAINING)
    values.update({f"{group}.enabled": False for group in SWITCHABLE_GROUPS})
    return HybridConfig.from_flat(values)


def is_baseline(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(BASELINE_ATTR))


def find_baseline(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The best completed baseline trial (the first of equals; the score is maximized), or None: the reference
    of every lift."""
    done = [t for t in trials if is_baseline(t) and t.state == TrialState.COMPLETE and t.values]
    if not done:
        return None
    return min(done, key=lambda t: (-t.values[0], t.number))


def reference_baseline(study: optuna.Study) -> FrozenTrial | None:
    """The best completed baseline trial of a study, or None."""
    return find_baseline(study.get_trials(deepcopy=False))


def baseline_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if is_baseline(t)]


def lift_of(trial: FrozenTrial, reference: FrozenTrial | None) -> Lift | None:
    """``trial``'s lift over the reference baseline, computed now from both trials' fold scores; None for a
    baseline trial, without a reference, or without a common fold."""
    if reference is None or is_baseline(trial):
        return None
    scores = trial.user_attrs.get("fold_scores") or []
    base = reference.user_attrs.get("fold_scores") or []
    repeats = int(reference.user_attrs.get("cv_repeats", 1))
    paired = min(len(scores), len(base))
    ratio = size_ratio(trial.user_attrs.get("fold_sizes") or reference.user_attrs.get("fold_sizes"), paired)
    return compute_lift(scores, base, reference.number, repeats=repeats, test_train_ratio=ratio)


def lift_label(trial: FrozenTrial, reference: FrozenTrial | None) -> str:
    """A table cell: ``baseline`` (``baseline (reference)`` for the best), ``+0.0123 (p 0.031)``, else ``-``."""
    if is_baseline(trial):
        return "baseline (reference)" if reference is not None and trial.number == reference.number else "baseline"
    lift = lift_of(trial, reference)
    if lift is None:
        return "-"
    return f"{lift.mean:+.4f}" + ("" if lift.p_value is None else f" (p {lift.p_value:.2g})")


def lift_warning(trial: FrozenTrial, reference: FrozenTrial | None) -> str | None:
    """A plain warning when ``trial`` is not shown to be better than the tuned baseline on the search's folds;
    None when it is (or when there is no baseline)."""
    if reference is None:
        return None
    if is_baseline(trial):
        return (f"the best trial is a baseline trial (trial {trial.number}, a plain full fine-tune): the search "
                "found no configuration that scores higher than the tuned full fine-tune; use it, or search longer")
    lift = lift_of(trial, reference)
    if lift is None:
        return f"trial {trial.number} has no fold in common with the baseline (trial {reference.number})"
    if lift.significant:
        return None
    why = "scores lower than" if lift.mean <= 0 else "is not significantly better than"
    return (f"trial {trial.number} {why} the tuned baseline full fine-tune (trial {reference.number}): lift "
            f"{lift.text()}; p >= {SIGNIFICANCE} or a lift <= 0 means the difference may be fold noise")
