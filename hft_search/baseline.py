"""The baseline a study is anchored to, and every trial's lift over it.

Why a baseline: users run a search to beat what they would do by hand, a plain full fine-tune at a sensible
learning rate. A search that only reports its best score cannot say whether it did. So trial 0 of a new study
(unless ``study.baseline: false``) is that full fine-tune: no freezing, importance mask, distillation or LoRA,
the spec's fixed training settings, and the midpoint of the searched learning-rate range (geometric for a log
range). Every later trial records its **lift**: the mean of its fold-by-fold differences to the baseline, their
standard deviation, and a paired t-test (``scipy.stats.ttest_rel``) over the folds.

Why pairing is sound: every trial of a study is scored on the same folds with the same seeds (common random
numbers, see :mod:`hft_search.objective`), so fold *i* of a trial and fold *i* of the baseline differ only by
the configuration. A pruned trial is compared on the folds it finished.

This module knows what the baseline is and how to compare with it; :mod:`hft_search.seeding` enqueues it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from hft_search.spec import (
    SWITCHABLE_GROUPS,
    CategoricalDist,
    Distribution,
    FloatDist,
    HybridConfig,
    StudySpec,
    out_of_range,
)

BASELINE_ATTR = "baseline"
"""Trial user attribute (``True``) of the baseline trial."""
LIFT_ATTR = "lift"
"""Trial user attribute: :meth:`Lift.to_attr` of the trial against the baseline."""
SIGNIFICANCE = 0.05
"""p-value below which a positive lift counts as better than the baseline."""
ZERO_SPREAD = 1e-9
"""Paired differences with less spread than this are equal up to rounding: the t-test is then undefined."""


def midpoint(dist: Distribution) -> Any:
    """The middle of a searched range: geometric for log scales, rounded for integers (snapped to a step);
    the first choice of a categorical."""
    if isinstance(dist, CategoricalDist):
        return dist.choices[0]
    low, high = dist.bounds
    middle = math.sqrt(low * high) if dist.log else (low + high) / 2
    step = dist.step if dist.step is not None else (None if isinstance(dist, FloatDist) else 1)
    if step is not None:
        middle = low + round((middle - low) / step) * step
    return type(low)(middle) if not isinstance(dist, FloatDist) else float(middle)


PLAIN_TRAINING = {"training.layer_lr_decay": 1.0, "training.reinit_layers": 0}
"""Training knobs that are hybrid methods themselves (soft freezing): the baseline always runs them off."""


def baseline_config(spec: StudySpec) -> HybridConfig:
    """The plain full fine-tune of a spec: every group off, the fixed training settings, and the midpoint of
    each searched training knob (the learning rate above all); soft freezing (:data:`PLAIN_TRAINING`) off."""
    values: dict[str, Any] = {k: v for k, v in spec.fixed.items() if k.startswith("training.")}
    values.update({k: midpoint(d) for k, d in spec.search_space.items() if k.startswith("training.")})
    values.update(PLAIN_TRAINING)
    values.update({f"{group}.enabled": False for group in SWITCHABLE_GROUPS})
    return HybridConfig.from_flat(values)


def baseline_params(spec: StudySpec) -> dict[str, Any]:
    """The searched knobs the baseline can be written in: group switches off and training knobs at their
    midpoint. Knobs of a group the spec forces on cannot express "off" and are left out (the baseline trial
    then simply lacks them, which samplers handle as for any conditional knob)."""
    config = baseline_config(spec).flat()
    return {name: config[name] for name, dist in spec.search_space.items()
            if (name.startswith("training.") or name.endswith(".enabled")) and out_of_range(dist, config[name]) is None}


def is_baseline(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(BASELINE_ATTR))


def find_baseline(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The completed baseline trial (the first, should a retried copy have completed too), or None."""
    done = [t for t in trials if is_baseline(t) and t.state == TrialState.COMPLETE]
    return min(done, key=lambda t: t.number) if done else None


@dataclass(frozen=True)
class Lift:
    """A trial's fold-by-fold difference to the baseline (trial − baseline; positive is better when
    maximizing). ``p_value`` is the paired t-test's two-sided p, None when it is undefined (fewer than two
    folds, or differences without spread)."""

    mean: float
    std: float  # sample standard deviation of the paired differences (0 with one fold)
    p_value: float | None
    folds: int
    baseline_trial: int

    @property
    def significant(self) -> bool:
        """Better than the baseline: positive mean lift and p < :data:`SIGNIFICANCE`."""
        return self.mean > 0 and self.p_value is not None and self.p_value < SIGNIFICANCE

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attr(cls, value: Any) -> Lift | None:
        return cls(**value) if isinstance(value, dict) else None

    def text(self) -> str:
        """``+0.0123 ± 0.0040 (paired t-test over 3 folds, p = 0.031)`` against the baseline trial."""
        p = "p undefined" if self.p_value is None else f"p = {self.p_value:.3g}"
        return f"{self.mean:+.4f} ± {self.std:.4f} (paired t-test over {self.folds} folds, {p})"


def compute_lift(scores: Sequence[float], baseline_scores: Sequence[float], baseline_trial: int, *,
                 maximize: bool = True) -> Lift | None:
    """The lift of fold ``scores`` over ``baseline_scores`` on the folds both have (None: no common fold).

    Fold *i* of one is paired with fold *i* of the other. When minimizing, the difference is baseline − trial,
    so that a positive lift always means better.
    """
    from scipy import stats

    n = min(len(scores), len(baseline_scores))
    pairs = [(a, b) for a, b in zip(scores[:n], baseline_scores[:n], strict=True)
             if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return None
    trial, base = (np.array(side, dtype=float) for side in zip(*pairs, strict=True))
    diffs = trial - base if maximize else base - trial
    std = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    p_value = None
    if len(diffs) > 1 and std > ZERO_SPREAD:
        p_value = float(stats.ttest_rel(trial, base).pvalue)
    return Lift(float(np.mean(diffs)), std, p_value, len(diffs), baseline_trial)


def lift_of(trial: FrozenTrial) -> Lift | None:
    """The lift a trial recorded, or None (the baseline itself, or no completed baseline when it ran)."""
    return Lift.from_attr(trial.user_attrs.get(LIFT_ATTR))


def lift_label(trial: FrozenTrial) -> str:
    """A table cell: ``baseline`` for the baseline trial, ``+0.0123 (p 0.031)`` for a trial with a lift, else ``-``."""
    if is_baseline(trial):
        return "baseline"
    lift = lift_of(trial)
    if lift is None:
        return "-"
    return f"{lift.mean:+.4f}" + ("" if lift.p_value is None else f" (p {lift.p_value:.2g})")


def verdict(trial: FrozenTrial, baseline: FrozenTrial | None) -> str | None:
    """A plain warning when ``trial`` is not shown to be better than the baseline; None when it is."""
    if baseline is None:
        return None
    if trial.number == baseline.number or is_baseline(trial):
        return (f"the best trial is the baseline (trial {baseline.number}, a plain full fine-tune): the search "
                "found no configuration that scores higher; use the full fine-tune, or search longer")
    lift = lift_of(trial)
    if lift is None:
        return f"trial {trial.number} recorded no lift over the baseline (trial {baseline.number})"
    if lift.significant:
        return None
    why = "scores lower than" if lift.mean <= 0 else "is not significantly better than"
    return (f"trial {trial.number} {why} the baseline full fine-tune (trial {baseline.number}): lift "
            f"{lift.text()}; p >= {SIGNIFICANCE} or a lift <= 0 means the difference may be fold noise")
