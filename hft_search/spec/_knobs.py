"""Knob-by-knob validation of ``search_space`` and ``fixed``, every problem collected.

Why not one pydantic model of the whole spec: both sections are keyed by dotted knob names, and each value is
checked against its own group's model (a ``fixed`` value as it is, a search-space entry at each of its
endpoints), so that one spec's every problem is listed at once, each under its own path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from hft_search.exceptions import SpecIssue
from hft_search.spec._groups import GROUPS, knob_names
from hft_search.spec._space import Distribution, parse_distribution


def pydantic_issues(error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[SpecIssue]:
    """Pydantic's errors as spec issues, each under its dotted field path (below ``prefix``)."""
    issues = []
    for item in error.errors():
        loc = [str(part) for part in (*prefix, *item["loc"]) if part not in ("function-after[_check()]",)]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; remove it or check its spelling"
        issues.append(SpecIssue(".".join(loc), message))
    return issues


def _knob_value(name: str, value: Any) -> Any:
    """``value`` as knob ``name`` holds it after validation."""
    group, field = name.split(".", 1)
    return getattr(GROUPS[group].model_validate({field: value}), field)


def _check_knob_value(name: str, value: Any) -> str | None:
    """Why ``value`` is not valid for knob ``name``, or None when it is."""
    group, field = name.split(".", 1)
    try:
        GROUPS[group].model_validate({field: value})
    except ValidationError as error:
        return "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
    return None


def check_knobs(raw_space: Mapping[str, Any], raw_fixed: dict[str, Any]) -> tuple[dict, list[SpecIssue]]:
    """Validate ``search_space`` and ``fixed`` knob by knob, collecting every problem; valid ``fixed`` values
    are replaced by their validated form."""
    valid = set(knob_names())
    listing = ", ".join(sorted(valid))
    space: dict[str, Distribution] = {}
    issues: list[SpecIssue] = []
    for section, entries in (("search_space", raw_space), ("fixed", raw_fixed)):
        for name, raw in entries.items():
            path = f"{section}.{name}"
            if name not in valid:
                issues.append(SpecIssue(path, f"unknown knob; valid knobs are: {listing}"))
                continue
            if section == "fixed":
                if name in raw_space:
                    issues.append(SpecIssue(path, "is both searched and fixed; keep one"))
                elif (why := _check_knob_value(name, raw)) is not None:
                    issues.append(SpecIssue(path, why))
                else:  # the validated value: YAML reads `5e-5` (no dot) as a string, pydantic makes it a float
                    raw_fixed[name] = _knob_value(name, raw)
                continue
            try:
                dist = parse_distribution(raw)
            except ValidationError as error:
                issues.extend(pydantic_issues(error, (section, name)))
                continue
            except ValueError as error:
                issues.append(SpecIssue(path, str(error)))
                continue
            for endpoint in dist.endpoints():
                if (why := _check_knob_value(name, endpoint)) is not None:
                    issues.append(SpecIssue(path, f"value {endpoint!r} is out of range: {why}"))
                    break
            else:
                space[name] = dist
    return space, issues
