"""The loop that lets any number of workers, on any number of machines, finish **exactly** ``n_trials``
trials of one study together.

Which trials count
    A *searched* trial counts towards ``n_trials`` once it ended with a verdict: COMPLETE, PRUNED, or FAIL with
    a recorded ``fail_reason`` (out of memory, an exception in a fold). A FAIL trial without a reason was
    interrupted (Ctrl-C, a killed worker, a lost database connection) and does not count, so re-running the
    same command, or starting more workers, continues to ``n_trials`` in total instead of starting over or
    stopping short. The trials of the baseline sweep (:mod:`hft_search.baseline`) never count and never hold a
    place: ``n_trials`` is the search's budget, and a spec with ``n_trials: 1`` runs the sweep and one trial.

Exactly ``n_trials``, without a lock
    Optuna's ``MaxTrialsCallback`` is racy across workers: two of them may both start "the last" trial. Here a
    trial *holds a place* when it counts or may still count (RUNNING, WAITING), and places go by trial number.
    When a trial starts (a new one or a re-queued WAITING one), before its objective does any work, the worker
    counts the trials with a *lower number* that hold a place. When there are already ``n_trials`` of them,
    this trial is *surplus*: it ends at once as FAIL with the user attribute ``surplus: true`` and never
    counts (samplers ignore FAIL trials; reports can tell it from a real failure by that attribute).

    Why that is exact: Optuna numbers trials under a lock on the study row, so all workers agree on the order
    and every trial numbered below one is visible when that one starts. A trial that holds a place can only
    lose it (interrupted: FAIL without a reason), never regain it, and trials created or re-queued later get
    higher numbers. So once a trial is admitted, the places below it stay below ``n_trials``: the trials that
    count can never exceed ``n_trials``. They cannot stay below it either, because a worker only leaves when
    ``n_trials`` trials count (or it is told to stop, or the timeout passes).

The worker loop
    Before each trial a worker looks at the study:

    * a WAITING trial exists (a re-queued trial of a dead or interrupted worker): run it, even when
      ``n_trials`` trials already count (it is then surplus at once), so that no trial is left waiting;
    * ``n_trials`` trials count: the study is done, leave;
    * fewer than ``n_trials`` trials hold a place: start a trial;
    * otherwise every remaining place is held by a RUNNING trial of another worker: wait, polling every
      heartbeat interval (at most :data:`MAX_POLL_S`), because that worker may die. Its trial then stops
      beating; after the grace period a waiting worker marks it FAIL and re-queues its parameters as a WAITING
      trial (:func:`hft_search.storage.make_storage`, at most ``max_retries`` times; a trial whose worker
      died before its first heartbeat too), and runs it. The RUNNING
      trials of live workers are theirs to finish. With a journal storage there is no heartbeat (Optuna 5.0),
      a dead worker's trial would hold its place for ever, so the worker leaves instead of waiting.

Failing fast
    A trial that fails from an exception (``failure_kind: "exception"``, recorded by the objective) most
    likely hit a bug or a broken setup that the next trial hits too. After ``max_consecutive_failures`` such
    trials in a row, counted by each worker over its own trials, the worker stops with
    :class:`~hft_search.exceptions.ConsecutiveFailures` (exit status 1) instead of spending the budget on it.
    Out-of-memory trials (``failure_kind: "oom"``) are a property of the configuration's size, not a bug:
    they neither count towards that streak nor end it; a COMPLETE or PRUNED trial ends it.

Stopping a worker
    :func:`run_worker` catches SIGTERM and SIGINT. The first lets the current trial end normally, then the
    worker leaves (exit status 0). A second raises :class:`KeyboardInterrupt` inside the trial: it ends FAIL
    without a reason and this worker re-queues its parameters at once (as for a dead worker), so another
    worker, or the next start, runs it again. A worker killed outright (SIGKILL, power loss) is covered by
    the heartbeat. With a journal storage, a re-queued trial waits for the next worker start.
    Workers stopped from outside at any moment (Ray's cancel, for ``hft-search launch``) use
    :class:`AbortTrial` instead: the interrupt is only raised inside the objective, where the trial's number
    is known and it can be handed back.

Storage outages
    When the database goes away (restart, fail-over, network), a worker retries it with growing pauses and
    goes on as soon as it answers; after :data:`RECONNECT_WINDOW_S` seconds it gives up with a
    :class:`~hft_search.exceptions.StorageError`. The trial it was running when the connection broke is
    handed back: marked FAIL if it is still RUNNING, and re-queued. A trial that another worker declared
    dead meanwhile (no heartbeat for the grace period) was already re-queued by that worker; its result is
    dropped with a warning.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hft_search._optuna_compat import (
    OPTIMIZE_LOGGER,
    experimental,
    failed_trial_number,
    heartbeat_interval,
    retry_callback,
    retry_history,
)
from hft_search.attrs import BASELINE_ATTR, FAIL_REASON_ATTR, FAILURE_KIND_ATTR, SURPLUS_ATTR
from hft_search.baseline import is_baseline
from hft_search.exceptions import ConsecutiveFailures, StorageError, TrialFailure
from hft_search.storage import error_summary, mask_url

if TYPE_CHECKING:
    from hft_search.spec import StudySpec

logger = logging.getLogger(__name__)


Objective = Callable[[optuna.Trial], Any]


StopRequested = Callable[[], bool]



MAX_POLL_S = 10.0
"""Longest wait between two looks at a study whose remaining places are all held by running trials."""


RECONNECT_WINDOW_S = 600.0
"""How long a worker keeps retrying a storage that does not answer before it gives up."""


_STORAGE_ERRORS = (StorageInternalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
"""What a lost database connection raises (Optuna wraps most SQLAlchemy errors in StorageInternalError)."""


def has_verdict(trial: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL with a recorded ``fail_reason``: a trial that was not interrupted."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def counts(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts towards ``n_trials``: a searched trial with a verdict."""
    return has_verdict(trial) and not is_baseline(trial)


def holds_place(trial: FrozenTrial) -> bool:
    """Whether a trial counts or may still count: it takes one of the ``n_trials`` places."""
    return (trial.state in (TrialState.RUNNING, TrialState.WAITING) and not is_baseline(trial)) or counts(trial)


def counted_trials(study: optuna.Study) -> int:
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def baseline_runs(study: optuna.Study) -> int:
    """Trials of the baseline sweep that ended with a verdict (outside ``n_trials``)."""
    return sum(is_baseline(t) and has_verdict(t) for t in study.get_trials(deepcopy=False))


@dataclass(frozen=True)
class _Census:
    """What a worker needs to know about a study before it starts a trial."""

    counted: int
    running: int
    waiting: int

    @classmethod
    def of(cls, study: optuna.Study) -> _Census:
        trials = study.get_trials(deepcopy=False)
        return cls(counted=sum(counts(t) for t in trials),
                   running=sum(t.state == TrialState.RUNNING and not is_baseline(t) for t in trials),
                   waiting=sum(t.state == TrialState.WAITING for t in trials))

    def next_step(self, n_trials: int) -> bool | None:
        """True: start a trial; False: the study is done; None: all free places are held by running trials."""
        if self.waiting:
            return True
        if self.counted >= n_trials:
            return False
        return True if self.counted + self.running < n_trials else None


class _Surplus(Exception):
    """Ends a trial that started after ``n_trials`` places were taken (see the module docstring)."""


class _Admission:
    """The objective as the workers run it: first the place check, then the real objective.

    Remembers the number of the trial it last started, so that the worker can hand that trial back when it
    is interrupted, and the surplus trials, whose FAIL Optuna should not report as a failure.
    """

    def __init__(self, objective: Objective, n_trials: int, abort: AbortTrial | None) -> None:
        self.objective = objective
        self.n_trials = n_trials
        self.abort = abort
        self.number: int | None = None
        self.surplus: set[int] = set()

    def __call__(self, trial: optuna.Trial) -> Any:
        self.number = trial.number
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        taken = sum(holds_place(t) for t in earlier)
        if taken >= self.n_trials and not trial.user_attrs.get(BASELINE_ATTR):
            self.surplus.add(trial.number)
            trial.set_user_attr(SURPLUS_ATTR, True)
            logger.info("trial %d is surplus: %d trials before it already hold the %d places; "
                        "it does not count", trial.number, taken, self.n_trials)
            raise _Surplus(f"trial {trial.number} is surplus")
        if self.abort is None:
            return self.objective(trial)
        with self.abort.inside_objective():
            return self.objective(trial)


class _HideSurplusFailures(logging.Filter):
    """Drops Optuna's "Trial N failed" warnings about surplus trials: not failures (logged at INFO here).

    Also takes the traceback off Optuna's warning about a trial ended by Ctrl-C or a second stop signal: it
    shows where the process happened to be, which says nothing to a user; the one line stays. And drops
    Optuna's two warnings (one with a traceback) about a trial whose objective already logged why it failed
    (a :class:`TrialFailure`), so a failing trial is one line; ``--verbose`` (debug logging) keeps them.
    """

    def __init__(self, admission: _Admission) -> None:
        super().__init__()
        self.admission = admission
        self.explained: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        number = failed_trial_number(record.getMessage())
        if number is None:
            return True
        if record.exc_info and isinstance(record.exc_info[1], TrialFailure) \
                and not logging.getLogger("hft_search").isEnabledFor(logging.DEBUG):
            self.explained.add(number)
        return number not in self.admission.surplus and number not in self.explained


@contextmanager
def _hiding_surplus_failures(admission: _Admission) -> Iterator[None]:
    """Installs :class:`_HideSurplusFailures` on the logger of Optuna's optimize loop (if it is renamed, the
    warnings merely show)."""
    optimize_logger = logging.getLogger(OPTIMIZE_LOGGER)
    hide = _HideSurplusFailures(admission)
    optimize_logger.addFilter(hide)
    try:
        yield
    finally:
        optimize_logger.removeFilter(hide)


def _storage_failure(error: BaseException | None) -> BaseException | None:
    """The storage error behind ``error``: itself, its cause, or one it was raised while handling.

    Optuna 5.0 reports a ``tell`` that fails in an outage as an ``UnboundLocalError`` raised while handling
    the storage error, so the whole chain is searched.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, _STORAGE_ERRORS):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _trial(study: optuna.Study, number: int) -> FrozenTrial:
    return study.get_trials(deepcopy=False)[number]


def _requeued(study: optuna.Study, number: int) -> bool:
    """Whether a WAITING copy of trial ``number`` was already made (by a heartbeat sweep or a hand-back)."""
    return any(number in retry_history(t) for t in study.get_trials(deepcopy=False))


class _Worker:
    """One worker's loop over trials; see "The worker loop" in the module docstring."""

    def __init__(self, study: optuna.Study, objective: Objective, n_trials: int, *, timeout: float | None,
                 max_retries: int, max_consecutive_failures: int, stop: StopRequested,
                 abort: AbortTrial | None) -> None:
        self.study = study
        self.max_consecutive_failures = max_consecutive_failures
        self.failures_in_a_row: list[str] = []
        self.n_trials = n_trials
        self.admission = _Admission(objective, n_trials, abort)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.stop = stop
        interval = heartbeat_interval(study)
        self.poll_s = None if interval is None else min(float(interval), MAX_POLL_S)
        self.requeue = retry_callback(max_retries)

    def run(self, after_trial: Callable[[], None]) -> None:
        with _hiding_surplus_failures(self.admission):
            while self._may_go_on():
                try:
                    if not self._wait_for_place():
                        return
                    self.admission.number = None
                    self.study.optimize(self.admission, n_trials=1, catch=(TrialFailure, _Surplus),
                                        gc_after_trial=True)
                    after_trial()
                except KeyboardInterrupt:
                    self._try_hand_back()
                    raise
                except Exception as error:
                    self._recover(error)
                self._fail_fast()

    def _fail_fast(self) -> None:
        """Track this worker's streak of trials that failed from an exception; stop it when it is too long."""
        number = self.admission.number
        if number is None or number in self.admission.surplus:
            return
        trial = _trial(self.study, number)
        kind = trial.user_attrs.get(FAILURE_KIND_ATTR)
        if trial.state == TrialState.FAIL and kind == "exception":
            self.failures_in_a_row.append(f"trial {number}: {trial.user_attrs.get(FAIL_REASON_ATTR, '?')}")
        elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.failures_in_a_row = []
        if len(self.failures_in_a_row) >= self.max_consecutive_failures:
            reasons = "\n  ".join(self.failures_in_a_row)
            raise ConsecutiveFailures(
                f"{len(self.failures_in_a_row)} trials in a row failed from an exception, so this worker stopped "
                f"(study.max_consecutive_failures={self.max_consecutive_failures}):\n  {reasons}\n"
                "This looks like a bug or a broken setup rather than bad luck: fix it (run with --verbose for the "
                "traceback), then start the worker again; finished trials are kept.")

    def _recover(self, error: Exception) -> None:
        """Go on after a lost storage connection or a trial taken over by another worker; re-raise the rest."""
        failure = _storage_failure(error)
        if failure is not None:
            self._wait_for_storage(failure)
            self._try_hand_back()
        elif self._taken_over():
            logger.warning("trial %s was declared dead by another worker (no heartbeat for the grace period, "
                           "e.g. during a database outage) and re-queued there; its result here is dropped",
                           self.admission.number)
        else:
            raise error

    def _may_go_on(self) -> bool:
        return not self.stop() and (self.deadline is None or time.monotonic() < self.deadline)

    def _wait_for_place(self) -> bool:
        """Wait until this worker should start a trial (True), or leave (False); see the module docstring."""
        announced = False
        while self._may_go_on():
            census = _Census.of(self.study)
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

    def _wait_for_storage(self, error: BaseException) -> None:
        """Retry the storage with a growing pause until it answers, for :data:`RECONNECT_WINDOW_S` at most."""
        summary = error_summary(error)
        logger.warning("storage unavailable (%s); retrying for up to %.0f s", summary, RECONNECT_WINDOW_S)
        given_up = time.monotonic() + RECONNECT_WINDOW_S
        pause = 0.5
        while time.monotonic() < given_up:
            if not self._may_go_on():
                return  # stopping: the trial's heartbeat has stopped, another worker will retry it
            self._sleep(pause)
            try:
                self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except _STORAGE_ERRORS:
                pause = min(2 * pause, MAX_POLL_S)
                continue
            logger.info("storage reachable again; going on")
            return
        raise StorageError(f"the storage of study {self.study.study_name!r} did not answer for "
                           f"{RECONNECT_WINDOW_S:.0f} s: {summary}. Check the database, then start the "
                           "worker again: finished trials are kept.") from None

    def _hand_back(self) -> None:
        """The trial this worker could not finish: mark it FAIL if still RUNNING, and re-queue it once.

        A trial that another worker's heartbeat sweep failed is re-queued by that worker (skipped here).
        Should both re-queue it in the millisecond between that sweep's two writes, the parameters run twice;
        the count stays exact (the later copy is surplus or takes a free place).
        """
        number = self.admission.number
        if number is None:
            return
        trial = _trial(self.study, number)
        if trial.state == TrialState.RUNNING:
            try:
                self.study.tell(number, state=TrialState.FAIL)
            except (UpdateFinishedTrialError, ValueError):
                return  # ended meanwhile by another worker's heartbeat sweep, which re-queues it
            trial = _trial(self.study, number)
        if trial.state == TrialState.FAIL and not has_verdict(trial) and number not in self.admission.surplus \
                and not _requeued(self.study, number):
            self.requeue(self.study, trial)
            logger.info("trial %d re-queued with the same parameters", number)

    def _try_hand_back(self) -> None:
        """Hand the trial back if the storage answers; if it does not, the trial's heartbeat has stopped, and
        another worker retries it after the grace period."""
        try:
            self._hand_back()
        except Exception as error:  # an interrupt or the first storage error is what the user must see
            logger.warning("could not re-queue trial %s (%s); it is retried once its heartbeat is stale",
                           self.admission.number, mask_url(str(error)))

    def _taken_over(self) -> bool:
        number = self.admission.number
        return number is not None and _trial(self.study, number).state == TrialState.FAIL \
            and _requeued(self.study, number)


@contextmanager
def _progress_bar(enabled: bool, n_trials: int, done: int) -> Iterator[Any]:
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
    """Run trials until ``n_trials`` count in the study, across every worker (see the module docstring).

    Args:
        study: the study, opened on a storage that all workers share.
        objective: the objective; it runs only for trials that hold a place.
        n_trials: the total of counted trials wanted in the study, whoever runs them.
        timeout: seconds after which no new trial starts.
        progress: show a progress bar of the counted trials.
        max_retries: how often the trial of an interrupted worker is re-queued (as for a dead worker).
        max_consecutive_failures: this worker stops after so many of its trials in a row failed from an
            exception (see "Failing fast" in the module docstring).
        stop: called before each trial and while waiting; True makes the worker leave.
        abort: interrupts arrive only inside the objective (see :class:`AbortTrial`); its stop request also
            makes the worker leave.

    Raises:
        ConsecutiveFailures: ``max_consecutive_failures`` trials of this worker in a row failed from an
            exception.
    """
    census = _Census.of(study)
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


class GracefulStop:
    """SIGTERM/SIGINT handling of a worker: the first signal asks it to stop after its current trial, a second
    one raises :class:`KeyboardInterrupt` at once (the trial is then re-queued; see the module docstring).

    Use as a context manager, which installs the handlers and puts the previous ones back; called, it says
    whether a stop was asked. Signal handlers can only be installed from the main thread: elsewhere it
    installs nothing and a stop is never asked.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            raise KeyboardInterrupt(f"second stop signal ({name})")
        self.requested = True
        logger.warning("%s: stopping after the current trial; send it again to abort the trial now (it is "
                       "then re-queued for another worker)", name)


class AbortTrial:
    """SIGINT handling of a worker that is stopped from outside at any moment: the running trial is aborted and
    re-queued, as by a second SIGTERM, but the interrupt is only raised *inside the objective*.

    Why: Ray cancels the workers of ``hft-search launch`` by interrupting their main thread wherever it is. An
    interrupt inside Optuna's own storage calls (while it creates a trial, or records its end) would leave that
    trial RUNNING with no number known to hand back, and the study one place short until the heartbeat sweep of
    a later worker. So outside the objective the signal only asks the worker to leave (called, this object says
    so), and a trial whose objective is about to begin is aborted right there, when its number is known.

    Use as a context manager, which installs the SIGINT handler (main thread only) and puts the previous back.
    """

    def __init__(self) -> None:
        self.requested = False
        self._in_objective = False
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> AbortTrial:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    @contextmanager
    def inside_objective(self) -> Iterator[None]:
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


def worker_seed(spec: StudySpec) -> int:
    """The sampler seed of one worker: the spec's seed mixed with this host and process.

    Every worker builds its own sampler; with the spec's seed in all of them, the random start-up trials of
    TPE (and every trial of random search) would be the same configurations in every worker, fine-tuned
    twice. Folds and training seeds stay the spec's, so trials remain comparable across workers.
    """
    return (spec.study.seed + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())) % 2**32


def requeue_running(study: optuna.Study, *, older_than_s: float = 0.0, max_retries: int = 3) -> list[int]:
    """Mark the study's RUNNING trials that started more than ``older_than_s`` seconds ago FAIL, and re-queue
    their parameters as WAITING trials; return their numbers (``hft-search requeue``).

    The way out for storages without heartbeats (journal): there a worker that was killed leaves its trial
    RUNNING for ever, holding one of the ``n_trials`` places. Only the user knows that no worker runs it any
    more; a live worker whose trial is re-queued finds it FAIL at its end and drops its result.
    """
    now = time.time()
    requeue = retry_callback(max_retries)
    done = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - started < older_than_s:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):
            continue  # it finished meanwhile
        requeue(study, _trial(study, trial.number))
        done.append(trial.number)
    return done


def shortfall(study: optuna.Study, n_trials: int) -> str | None:
    """Why a study ended below ``n_trials`` counted trials, with what to do; None when it reached them."""
    trials = study.get_trials(deepcopy=False)
    counted = sum(counts(t) for t in trials)
    if counted >= n_trials:
        return None
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    held = (f"; trials {', '.join(map(str, running))} are RUNNING in other workers, or in workers that died: "
            f"if none runs them, `hft-search requeue --study {study.study_name} --storage URL` re-queues them"
            if running else "")
    return (f"study {study.study_name!r} stopped at {counted} of {n_trials} counted trials{held}; "
            "run the same command again to continue")


def no_result(study: optuna.Study) -> str | None:
    """Why a study that ran has nothing to show: no COMPLETE trial and at least one FAIL (every trial failed, or
    failed and was pruned), with the first reason; None when it has a result or nothing failed."""
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not failed or any(t.state == TrialState.COMPLETE for t in trials):
        return None
    first = failed[0]
    return (f"study {study.study_name!r} has no completed trial: {len(failed)} of {len(trials)} failed (trial "
            f"{first.number}: {first.user_attrs.get(FAIL_REASON_ATTR, 'no reason recorded')}); fix the cause (run "
            "with --verbose for the traceback) and run again")
