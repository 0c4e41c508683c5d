"""Sampling a trial's configuration from the spec's search space, and the baseline sweep's fixed one.

Why a module of its own: what the sampler sees (group switches first, a group's knobs only when it is on) is
the search space's shape, which the adapter, ``baseline`` and the benchmarks share without running a trial.
"""

from __future__ import annotations

from typing import Any

import optuna

from hft_search.attrs import BASELINE_ATTR
from hft_search.baseline import baseline_config, baseline_params
from hft_search.spec import SWITCHABLE_GROUPS, CategoricalDist, FloatDist, HybridConfig, IntDist, StudySpec


def suggest_value(trial: optuna.Trial, name: str, dist: FloatDist | IntDist | CategoricalDist) -> Any:
    """One knob's value from ``trial``, by the Optuna ``suggest_*`` that matches the spec's distribution."""
    if isinstance(dist, FloatDist):
        return trial.suggest_float(name, *dist.bounds, log=dist.log, step=dist.step)
    if isinstance(dist, IntDist):
        return trial.suggest_int(name, *dist.bounds, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, dist.choices)


def suggest_config(trial: optuna.Trial, spec: StudySpec) -> HybridConfig:
    """Sample one configuration: group switches first, then only the knobs of the groups that are on."""
    values: dict[str, Any] = dict(spec.fixed)
    for group, decided in spec.enabled_groups().items():
        key = f"{group}.enabled"
        values[key] = bool(suggest_value(trial, key, spec.search_space[key])) if decided is None else decided
    for name, dist in spec.search_space.items():
        group = name.split(".", 1)[0]
        if name.endswith(".enabled") or (group in SWITCHABLE_GROUPS and not values[f"{group}.enabled"]):
            continue
        values[name] = suggest_value(trial, name, dist)
    return HybridConfig.from_flat(values)


def trial_config(trial: optuna.Trial, spec: StudySpec) -> HybridConfig:
    """The configuration a trial runs: for a trial of the baseline sweep the plain full fine-tune at its
    enqueued training knobs (every knob it carries is suggested, so that the sampler sees the trial's full
    shape; see :mod:`hft_search.baseline`), else a sampled one."""
    if not trial.user_attrs.get(BASELINE_ATTR):
        return suggest_config(trial, spec)
    params = {name: suggest_value(trial, name, spec.search_space[name]) for name in baseline_params(spec)[0]}
    return baseline_config(spec, params)
