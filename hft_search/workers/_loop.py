"""The worker loop: each worker runs trials until ``n_trials`` count in the study, across every worker.

Before each trial a worker looks at the study:

* a WAITING trial of the baseline sweep exists: run it (it takes no place);
* ``n_trials`` trials count: the study is done, leave. Searched WAITING trials left (enqueued configurations,
  re-queued trials of dead or interrupted workers) stay queued for a later run with a larger ``n_trials``,
  as with Optuna's own ``study.optimize``; running them here would only end them as surplus;
* fewer than ``n_trials`` trials hold a place: start a trial (Optuna takes the oldest WAITING one first);
* otherwise every remaining place is held by a RUNNING trial of another worker: wait, polling every heartbeat
  interval (at most :data:`MAX_POLL_S`), because that worker may die. Its trial then stops beating; after the
  grace period a waiting worker marks it FAIL and re-queues its parameters as a WAITING trial
  (:func:`hft_search.storage.make_storage`, at most ``max_retries`` times; a trial whose worker died before its
  first heartbeat too), and runs it. The RUNNING trials of live workers are theirs to finish. With a journal
  storage there is no heartbeat (Optuna 5.0), a dead worker's trial would hold its place for ever, so the
  worker leaves instead of waiting.

After each trial the worker updates its failure streak (:mod:`hft_search.workers._fail_fast`); an interrupt or a
lost storage hands its trial back (:mod:`hft_search.workers._handback`, :mod:`hft_search.workers._outage`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna

from hft_search._optuna_compat import experimental, heartbeat_interval, retry_callback
from hft_search.exceptions import ConsecutiveFailures, TrialFailure
from hft_search.workers._admission import Admission, Objective, Surplus, hiding_surplus_failures
from hft_search.workers._counting import Census, counted_trials
from hft_search.workers._fail_fast import FailureStreak
from hft_search.workers._handback import taken_over, trial_of, try_hand_back
from hft_search.workers._outage import storage_failure, wait_for_storage
from hft_search.workers._signals import AbortTrial, StopRequested

logger = logging.getLogger(__package__)  # one logger name for the whole worker loop, as before its split

MAX_POLL_S = 10.0
"""Longest wait between two looks at a study whose remaining places are all held by running trials."""


class _Worker:
    """One worker's loop over trials; see the module docstring."""

    def __init__(self, study: optuna.Study, objective: Objective, n_trials: int, *, timeout: float | None,
                 max_retries: int, max_consecutive_failures: int, stop: StopRequested,
                 abort: AbortTrial | None) -> None:
        self.study = study
        self.streak = FailureStreak(max_consecutive_failures)
        self.n_trials = n_trials
        self.admission = Admission(objective, n_trials, abort)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.stop = stop
        interval = heartbeat_interval(study)
        self.poll_s = None if interval is None else min(float(interval), MAX_POLL_S)
        self.requeue = retry_callback(max_retries)

    def run(self, after_trial: Callable[[], None]) -> None:
        with hiding_surplus_failures(self.admission):
            while self._may_go_on():
                try:
                    if not self._wait_for_place():
                        return
                    self.admission.number = None
                    self.study.optimize(self.admission, n_trials=1, catch=(TrialFailure, Surplus),
                                        gc_after_trial=True)
                    after_trial()
                    self._fail_fast()  # inside: it reads the storage, which may go away right after the trial
                except KeyboardInterrupt:
                    self._try_hand_back()
                    raise
                except ConsecutiveFailures:
                    raise
                except Exception as error:
                    self._recover(error)

    def _fail_fast(self) -> None:
        """Take this worker's last trial into its failure streak, which stops the worker when it is too long;
        a surplus trial ran nothing and is no part of it."""
        number = self.admission.number
        if number is None or number in self.admission.surplus:
            return
        self.streak.add(trial_of(self.study, number))

    def _recover(self, error: Exception) -> None:
        """Go on after a lost storage connection or a trial taken over by another worker; re-raise the rest."""
        failure = storage_failure(error)
        number = self.admission.number
        if failure is not None:
            wait_for_storage(self.study, failure, may_go_on=self._may_go_on, sleep=self._sleep,
                             max_pause_s=MAX_POLL_S)
            self._try_hand_back()
        elif number is not None and taken_over(self.study, number):
            logger.warning("trial %s was declared dead by another worker (no heartbeat for the grace period, "
                           "e.g. during a database outage) and re-queued there; its result here is dropped",
                           number)
        else:
            raise error

    def _try_hand_back(self) -> None:
        """Hand back the trial this worker last started, if any (see :func:`try_hand_back`)."""
        number = self.admission.number
        if number is not None:
            try_hand_back(self.study, number, surplus=number in self.admission.surplus, requeue=self.requeue)

    def _may_go_on(self) -> bool:
        return not self.stop() and (self.deadline is None or time.monotonic() < self.deadline)

    def _wait_for_place(self) -> bool:
        """Wait until this worker should start a trial (True), or leave (False); see the module docstring."""
        announced = False
        while self._may_go_on():
            census = Census.of(self.study)
            step = census.next_step(self.n_trials)
            if step is not None:
                return step
            if self.poll_s is None:
                logger.info("the remaining %d places of study %s are held by running trials of other "
                            "workers, and the storage has no heartbeat to tell if they are alive: leaving",
                            self.n_trials - census.counted, self.study.study_name)
                return False
            if not announced:
                logger.info("waiting: the remaining %d places are held by running trials of other workers "
                            "(a trial whose worker died is retried here after its grace period)",
                            self.n_trials - census.counted)
                announced = True
            self._sleep(self.poll_s)
            experimental(lambda: optuna.storages.fail_stale_trials(self.study))
        return False

    def _sleep(self, seconds: float) -> None:
        """Sleep in short steps, so that a stop request or the timeout ends the wait at once."""
        end = time.monotonic() + seconds
        while self._may_go_on() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))


@contextmanager
def _progress_bar(enabled: bool, n_trials: int, done: int) -> Iterator[Any]:
    """A progress bar of the counted trials (tqdm, imported only when asked for), or None."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=n_trials, initial=done, desc="trials", file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def optimize(study: optuna.Study, objective: Objective, n_trials: int, *, timeout: float | None = None,
             progress: bool = False, max_retries: int = 3, max_consecutive_failures: int = 3,
             stop: StopRequested | None = None, abort: AbortTrial | None = None) -> optuna.Study:
    """Run trials until ``n_trials`` count in the study, across every worker (see :mod:`hft_search.workers`).

    Args:
        study: the study, opened on a storage that all workers share.
        objective: the objective; it runs only for trials that hold a place.
        n_trials: the total of counted trials wanted in the study, whoever runs them.
        timeout: seconds after which no new trial starts.
        progress: show a progress bar of the counted trials.
        max_retries: how often the trial of an interrupted worker is re-queued (as for a dead worker).
        max_consecutive_failures: this worker stops after so many of its trials in a row failed from an
            exception (see :mod:`hft_search.workers._fail_fast`).
        stop: called before each trial and while waiting; True makes the worker leave.
        abort: interrupts arrive only inside the objective (see :class:`AbortTrial`); its stop request also
            makes the worker leave.

    Raises:
        ConsecutiveFailures: ``max_consecutive_failures`` trials of this worker in a row failed from an
            exception.
    """
    census = Census.of(study)
    if census.next_step(n_trials) is False:
        logger.info("study %s already has %d counted trials (n_trials=%d); nothing to run",
                    study.study_name, census.counted, n_trials)
        return study
    asked = stop or (lambda: False)
    worker = _Worker(study, objective, n_trials, timeout=timeout, max_retries=max_retries,
                     max_consecutive_failures=max_consecutive_failures,
                     stop=asked if abort is None else (lambda: asked() or abort()), abort=abort)
    with _progress_bar(progress, n_trials, census.counted) as bar:

        def after_trial() -> None:
            if bar is not None:
                bar.n = min(counted_trials(study), n_trials)
                bar.refresh()

        worker.run(after_trial)
    return study
