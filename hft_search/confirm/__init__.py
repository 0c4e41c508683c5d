"""The confirmation round: the search's top configurations and the tuned baseline fitted again on fresh folds,
and the verdict users see (:mod:`hft_search.confirm._round` runs it, :mod:`hft_search.confirm._record` is what
is stored and shown)."""

from hft_search.confirm._record import (
    CONFIRMATION_ATTR,
    Candidate,
    Confirmation,
    describe_confirmation,
    stored_confirmation,
    verdict_text,
)
from hft_search.confirm._round import candidates, confirm_stored, confirm_study, judge, stored_spec

__all__ = [
    "CONFIRMATION_ATTR",
    "Candidate",
    "Confirmation",
    "candidates",
    "confirm_stored",
    "confirm_study",
    "describe_confirmation",
    "judge",
    "stored_confirmation",
    "stored_spec",
    "verdict_text",
]
