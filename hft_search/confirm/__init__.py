"""The confirmation round: the search's top configurations and the tuned baseline fitted again on fresh folds,
and the verdict users see (:mod:`hft_search.confirm._round` runs it, :mod:`hft_search.confirm._record` is what
is stored and shown)."""

from hft_search.confirm._record import (
    CONFIRMATION_ATTR,
    Candidate,
    Confirmation,
    candidates,
    describe_confirmation,
    is_stale,
    stored_confirmation,
    verdict_text,
)
from hft_search.confirm._round import confirm_stored, confirm_study, judge, stored_spec

__all__ = [
    "CONFIRMATION_ATTR",
    "Candidate",
    "Confirmation",
    "candidates",
    "confirm_stored",
    "confirm_study",
    "describe_confirmation",
    "is_stale",
    "judge",
    "stored_confirmation",
    "stored_spec",
    "verdict_text",
]
