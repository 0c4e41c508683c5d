"""Log records with the passwords of storage URLs masked, wherever Optuna or hft_search logs them.

Why here and not in :mod:`hft_search.urls`: that module masks text and imports nothing; putting the filter on
loggers and handlers is a process-wide side effect that the commands which open storages install, once logging
is configured.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable

from hft_search.urls import mask_url


class MaskingFilter(logging.Filter):
    """Mask credentials of URLs in log records: the formatted message, the traceback and the stack.

    Never drops a record. The record's ``msg``/``args`` are replaced by the masked text only when there was
    something to mask, so other records reach the handlers unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = mask_url(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_url(record.stack_info)
        return True


def _targets(logger_names: Iterable[str]) -> list[logging.Logger | logging.Handler]:
    """The root logger's handlers, and each named logger with its own handlers: where a filter must sit to
    see every record of those loggers (a filter on a logger does not see its children's records)."""
    targets: list[logging.Logger | logging.Handler] = list(logging.getLogger().handlers)
    for name in logger_names:
        named = logging.getLogger(name)
        targets += [named, *named.handlers]
    return targets


def install_log_masking(logger_names: Iterable[str] = ("hft_search", "optuna")) -> None:
    """Install :class:`MaskingFilter` where it sees every record of the named loggers. Idempotent.

    A filter on a logger only sees records logged on that very logger, not on its children
    (``hft_search.study``, ``optuna.storages._rdb.storage``), so the filter also goes on the handlers that
    emit those records: the named loggers' own handlers (Optuna installs one) and the root logger's (where
    records propagate). Call it after logging is configured; handlers added later are not covered.
    """
    for target in _targets(logger_names):
        if not any(isinstance(existing, MaskingFilter) for existing in target.filters):
            target.addFilter(MaskingFilter())


def remove_log_masking(logger_names: Iterable[str] = ("hft_search", "optuna")) -> None:
    """Undo :func:`install_log_masking` for the root logger's handlers and the named loggers.

    Handlers outlive the code that installed the filter (a test runner reuses its capture handlers), so a
    process that embeds hft_search and wants its records untouched can take the filters off again.
    """
    for target in _targets(logger_names):
        for added in [f for f in target.filters if isinstance(f, MaskingFilter)]:
            target.removeFilter(added)
