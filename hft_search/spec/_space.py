"""Search-space entries in Optuna's distribution terms, and what a sampler may visit in each.

Why models of their own: a ``search_space`` entry is validated like any other part of the spec (bounds in order,
no log scale below 1, no repeated choice), with Optuna's own rules, so that ``validate`` refuses what
``trial.suggest_*`` would refuse only once a worker runs it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from hft_search.spec._model import SpecModel


class _Dist(SpecModel):
    """Base of the three kinds of entry: keyed by the kind (``float:``, ``int:``, ``categorical:``) in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class FloatDist(_Dist):
    """``{float: [low, high], log: false, step: null}`` → ``trial.suggest_float``."""

    bounds: tuple[float, float] = Field(alias="float")
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatDist:
        low, high = self.bounds
        if not low < high:
            raise ValueError("low must be below high")
        if self.log and low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be used together (Optuna's rule); drop one")
        return self

    def endpoints(self) -> list[Any]:
        return list(self.bounds)


class IntDist(_Dist):
    """``{int: [low, high], step: 1, log: false}`` → ``trial.suggest_int``."""

    bounds: tuple[int, int] = Field(alias="int")
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntDist:
        low, high = self.bounds
        if not low < high:
            raise ValueError("low must be below high")
        if self.log and low < 1:
            raise ValueError("log scale needs low >= 1")
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be used together (Optuna's rule); drop one")
        return self

    def endpoints(self) -> list[Any]:
        return list(self.bounds)


class CategoricalDist(_Dist):
    """``{categorical: [a, b, ...]}`` → ``trial.suggest_categorical``."""

    choices: list[Any] = Field(alias="categorical", min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CategoricalDist:
        for choice in self.choices:
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise ValueError(f"choice {choice!r} is not None, bool, int, float or str (Optuna's rule)")
        if len({json.dumps(c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices repeat a value")
        return self

    def endpoints(self) -> list[Any]:
        return list(self.choices)


Distribution = FloatDist | IntDist | CategoricalDist
_DIST_KINDS: dict[str, type[_Dist]] = {"float": FloatDist, "int": IntDist, "categorical": CategoricalDist}


def parse_distribution(raw: Any) -> Distribution:
    """The entry ``raw`` describes; a ``ValueError`` (or pydantic's ``ValidationError``) saying why it is none."""
    if not isinstance(raw, Mapping):
        raise ValueError("must be a mapping such as {float: [1e-5, 1e-3], log: true}")
    kinds = [kind for kind in _DIST_KINDS if kind in raw]
    if len(kinds) != 1:
        raise ValueError("needs exactly one of `float: [low, high]`, `int: [low, high]` or `categorical: [...]`")
    return _DIST_KINDS[kinds[0]].model_validate(dict(raw))


def out_of_range(dist: Distribution, value: Any) -> str | None:
    """Why ``value`` cannot be a value of ``dist`` (an enqueued or warm-started configuration), or None."""
    if isinstance(dist, CategoricalDist):
        return None if value in dist.choices else f"{value!r} is not one of {dist.choices}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if isinstance(dist, IntDist) and value != int(value):
        return f"{value!r} is not an integer"
    low, high = dist.bounds
    return None if low <= value <= high else f"{value!r} is outside [{low}, {high}]"


def grid_values(dist: Distribution) -> list[Any]:
    """Every value a grid sampler visits for one knob (int and stepped float ranges enumerated)."""
    if isinstance(dist, CategoricalDist):
        return list(dist.choices)
    low, high = dist.bounds
    step = dist.step or 1
    count = int(math.floor((high - low) / step + 1e-9)) + 1
    return [type(low)(low + i * step) if isinstance(dist, IntDist) else low + i * step for i in range(count)]
