"""Stopping a worker by a signal: after its trial (:class:`GracefulStop`) or inside it (:class:`AbortTrial`).

:func:`hft_search.study.run_worker` catches SIGTERM and SIGINT. The first lets the current trial end normally,
then the worker leaves (exit status 0). A second raises :class:`KeyboardInterrupt` inside the trial: it ends
FAIL without a reason and this worker re-queues its parameters at once (as for a dead worker), so another
worker, or the next start, runs it again. A worker killed outright (SIGKILL, power loss) is covered by the
heartbeat. With a journal storage, a re-queued trial waits for the next worker start. Workers stopped from
outside at any moment (Ray's cancel, for ``hft-search launch``) use :class:`AbortTrial` instead: the interrupt
is only raised inside the objective, where the trial's number is known and it can be handed back.
"""

from __future__ import annotations

import logging
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, ClassVar, TypeVar

logger = logging.getLogger(__package__)  # one logger name for the whole worker loop, as before its split

StopRequested = Callable[[], bool]
"""Asked before each trial and while waiting: True makes the worker leave."""

_Handler = TypeVar("_Handler", bound="StopSignals")


class StopSignals(ABC):
    """What both ways of stopping share: a stop request that the worker loop polls (call the object), and
    handlers for :attr:`SIGNALS` that are installed for a ``with`` block and then put back.

    Signal handlers can only be installed from the main thread: elsewhere nothing is installed and a stop is
    never asked. A previous handler that was not installed from Python (``signal.signal`` gives None for it)
    cannot be put back and is left alone.
    """

    SIGNALS: ClassVar[tuple[signal.Signals, ...]]

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[signal.Signals, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self: _Handler) -> _Handler:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    @abstractmethod
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """What one signal does: set :attr:`requested`, and raise :class:`KeyboardInterrupt` where that is safe."""


class GracefulStop(StopSignals):
    """SIGTERM/SIGINT handling of a worker: the first signal asks it to stop after its current trial, a second
    one raises :class:`KeyboardInterrupt` at once (the trial is then re-queued; see the module docstring).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            raise KeyboardInterrupt(f"second stop signal ({name})")
        self.requested = True
        logger.warning("%s: stopping after the current trial; send it again to abort the trial now (it is "
                       "then re-queued for another worker)", name)


class AbortTrial(StopSignals):
    """SIGINT handling of a worker that is stopped from outside at any moment: the running trial is aborted and
    re-queued, as by a second SIGTERM, but the interrupt is only raised *inside the objective*.

    Why: Ray cancels the workers of ``hft-search launch`` by interrupting their main thread wherever it is. An
    interrupt inside Optuna's own storage calls (while it creates a trial, or records its end) would leave that
    trial RUNNING with no number known to hand back, and the study one place short until the heartbeat sweep of
    a later worker. So outside the objective the signal only asks the worker to leave (called, this object says
    so), and a trial whose objective is about to begin is aborted right there, when its number is known.
    """

    SIGNALS = (signal.SIGINT,)

    def __init__(self) -> None:
        super().__init__()
        self._in_objective = False

    @contextmanager
    def inside_objective(self) -> Iterator[None]:
        """Where an interrupt may be raised: around the objective of a trial whose number is known."""
        if self.requested:
            raise KeyboardInterrupt("stopped before the trial's objective began")
        self._in_objective = True
        try:
            yield
        finally:
            self._in_objective = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._in_objective:
            raise KeyboardInterrupt("stopped during the trial")
        logger.warning("interrupted between trials: leaving before the next one")
