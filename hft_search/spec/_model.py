"""The base of every spec model: a YAML boolean is never taken as a number.

Why a base class and not a check per field: the rule must hold for every number a spec can hold, including the
fields a later change adds, so it follows the field's *type* (read from its annotation) wherever it is declared.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationInfo, field_validator


def _admits_bool(annotation: Any) -> bool:
    """Whether ``annotation`` accepts a boolean as a value of its own (``bool``, ``Any``, a union with them)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(arg) for arg in get_args(annotation) if get_origin(annotation) is not Literal)


def _numbers(annotation: Any) -> bool:
    """Whether ``annotation`` holds numbers only (``int``, ``float``, a tuple of them): no place for a bool."""
    if annotation in (int, float):
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _numbers(args[0])
    return origin is tuple and bool(args) and all(_numbers(arg) for arg in args if arg is not Ellipsis)


class SpecModel(BaseModel):
    """Base of every spec model: a YAML boolean is never taken as a number.

    YAML reads ``true``, ``yes`` and ``on`` as booleans, and pydantic turns a boolean into 1 or 0 for a number
    field: ``freeze.layers: true`` would silently freeze one layer. A field that is not itself a switch refuses
    them (in a pair of bounds too).
    """

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        values = value if isinstance(value, list | tuple) and get_origin(annotation) is tuple else [value]
        if any(isinstance(v, bool) for v in values) and not _admits_bool(annotation) \
                and (_numbers(annotation) or isinstance(value, bool)):
            raise ValueError("true/false where a number belongs (YAML reads true, yes and on as booleans); "
                             "write a number")
        return value
