"""One base error for the project, with subclasses that say how to fix what went wrong.

Every error a user can cause (a bad spec, a missing file, an unknown model) is raised as a subclass of
:class:`HFTSearchError` *and* of the builtin it refines (``ValueError`` for bad input, ``RuntimeError`` for
bad state), so callers can catch either. The CLI prints ``str(error)`` and exits 2, with no traceback: the
message must therefore name the field or file and how to fix it.

:func:`error_text` is here too: it is how an error caught in a trial is written down (``fail_reason``), and
any module that records a failure may import it without pulling in the objective.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class HFTSearchError(Exception):
    """Base class of every error raised on purpose by hft_search."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: the dotted path of the field and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(HFTSearchError, ValueError):
    """A study spec is invalid. Carries *all* problems found, so a user fixes them in one pass."""

    def __init__(self, issues: Iterable[SpecIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{len(self.issues)} problem(s){where}:\n{lines}")


class DataError(HFTSearchError, ValueError):
    """A dataset cannot be used as given (missing file or column, one class only, empty text...)."""


class ModelError(HFTSearchError, ValueError):
    """A model cannot be loaded or its architecture is not supported."""


class StorageError(HFTSearchError, RuntimeError):
    """A study storage cannot be reached or a study is not where the user said it is."""


class TrialFailure(HFTSearchError, RuntimeError):
    """A trial ends FAIL with a verdict: the objective recorded ``reason`` on it (out of memory, an exception in
    a fold), and the worker loop goes on to the next trial."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TrainingDiverged(TrialFailure):
    """A fine-tune diverged (a non-finite loss, a NaN fold score): the objective ends the trial PRUNED, not FAIL,
    since the configuration was tried and judged bad, like a pruned one. A :class:`TrialFailure`, so that code
    catching those (and ``fine_tune``'s callers) sees it too."""


class ClusterError(HFTSearchError, RuntimeError):
    """Workers cannot be placed as asked: Ray is missing or unreachable, or the resources asked for do not exist."""


class ConsecutiveFailures(HFTSearchError, RuntimeError):
    """A worker saw ``study.max_consecutive_failures`` trials in a row fail from an exception: most likely a bug
    or a broken setup that every further trial would hit too, so the worker stops instead of spending the budget.

    The command line exits with :attr:`exit_code` (1: the run failed, not the input).
    """

    exit_code = 1
class DeviceMemoryError(HFTSearchError, RuntimeError):
    """A fine-tune would not fit the device's free memory; raised before training, saying what to change."""


class ConfirmError(HFTSearchError, ValueError):
    """A confirmation round cannot be run as asked (multi-objective study, nothing completed, not hft-search's)."""


class ExportError(HFTSearchError, ValueError):
    """An export, train or predict request cannot be carried out as asked."""


class OutputError(ExportError):
    """An output cannot be written where asked: it would replace one of the command's inputs or something that
    is not an output, its folder is read-only, or the disk is full. Nothing was written."""


class DashboardError(HFTSearchError, RuntimeError):
    """The dashboard cannot listen where asked (port in use or out of range, unknown host)."""


REASON_CHARS = 2000
"""Longest ``fail_reason``; longer ones keep their start and their end (where Python puts the cause)."""


def error_text(error: BaseException) -> str:
    """An exception's whole message and those of its causes on one line, for ``fail_reason``.

    Not only the first line: many library errors say what went wrong last (``... size mismatch for
    position_ids``), so a message is shortened only beyond :data:`REASON_CHARS`, in the middle.
    """
    parts = [" ".join(str(error).split())]
    cause = error.__cause__
    while cause is not None and len(parts) < 5:
        parts.append(f"caused by {type(cause).__name__}: {' '.join(str(cause).split())}")
        cause = cause.__cause__
    text = "; ".join(parts)
    if len(text) <= REASON_CHARS:
        return text
    half = REASON_CHARS // 2
    return f"{text[:half]} ... {text[-half:]}"
