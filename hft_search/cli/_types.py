"""Argument types: a mistyped number is refused by argparse with a usage line, before anything starts.

Apart from the parser so that each type is one small, testable function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

_Number = TypeVar("_Number", int, float)


def _parse(convert: Callable[[str], _Number], text: str, what: str) -> _Number:
    """``convert(text)``, or argparse's usage error saying the text is not ``what``."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (``--n-trials 0`` or ``-5`` is a mistake, not a no-op)."""
    value = _parse(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of 0 or more (a negative age or ``inf`` is a mistake)."""
    value = _parse(float, text, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def fold_list(text: str) -> list[int]:
    """An argparse type: fold numbers separated by commas, at least one (``verify --folds 0,1``)."""
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give fold numbers separated by commas, e.g. 0,1") from None
    if not folds:
        raise argparse.ArgumentTypeError("give at least one fold number, e.g. 0")
    return folds


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    value = _parse(int, text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1 to 65535 (0: any free port)")
    return value
