"""Many workers on one study: exactly ``n_trials``, killed and stopped workers, a restarted database, masking.

Worker processes run ``tests/cheap_worker.py``: the real worker loop with a near-zero-cost objective. PostgreSQL
cases use ``$HFT_TEST_POSTGRES_URL`` as tests/test_storage.py does (skipped when unset, failing when the
server is down). Each test uses its own study name and deletes its study.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from cheap_worker import GRID_SIZE, STARTED, CheapObjective, cheap_spec
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from test_storage import SECRET, abandon_a_trial, postgres_url, unreachable_postgres_url

from hft_search.exceptions import ConsecutiveFailures, TrialFailure
from hft_search.storage import delete_study_if_exists, make_storage
from hft_search.study import make_sampler, open_study, run_worker, target_trials
from hft_search.workers import (
    FAILURE_KIND_ATTR,
    SURPLUS_ATTR,
    AbortTrial,
    counted_trials,
    counts,
    optimize,
    worker_seed,
)
from hft_search.workers._admission import Admission, Surplus, hiding_surplus_failures

WORKER = Path(__file__).with_name("cheap_worker.py")
HEARTBEAT_S = 1
GRACE_S = 3
PROCESS_TIMEOUT_S = 90
"""Generous: four Python processes start on two shared cores; a healthy run takes seconds."""

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/hft.db" if request.param == "sqlite" else postgres_url()


@contextmanager
def own_study(url: str) -> Iterator[str]:
    """A study name of this test's own; the study is deleted afterwards."""
    name = f"test-workers-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        storage = make_storage(url)
        delete_study_if_exists(name, storage)
        storage.engine.dispose()


@pytest.fixture
def study_name(storage_url: str) -> Iterator[str]:
    with own_study(storage_url) as name:
        yield name


class Worker:
    """A ``tests/cheap_worker.py`` process. Its output goes to a file: a pipe nobody reads could fill up and
    block it."""

    def __init__(self, url: str, name: str, n_trials: int, *, sleep: float = 0.0, sampler: str = "random",
                 baseline: bool = False) -> None:
        command = [sys.executable, str(WORKER), url, name, str(n_trials), "--sleep", str(sleep),
                   "--sampler", sampler, "--heartbeat", str(HEARTBEAT_S), "--grace", str(GRACE_S),
                   *(["--baseline"] if baseline else [])]
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.pid = self.process.pid

    def output(self) -> str:
        self.log.seek(0)
        return f"--- worker {self.pid}:\n{self.log.read()}"


def finish(workers: list[Worker], timeout: float = PROCESS_TIMEOUT_S) -> list[int]:
    """Exit codes of all workers; on timeout, kill them and fail with what they printed."""
    deadline = time.monotonic() + timeout
    try:
        return [worker.process.wait(timeout=max(0.1, deadline - time.monotonic())) for worker in workers]
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker.process.kill()
        pytest.fail(f"workers still running after {timeout} s:\n{output(workers)}")


def output(workers: list[Worker]) -> str:
    return "\n".join(worker.output() for worker in workers)


def trials_of(url: str, name: str) -> list[FrozenTrial]:
    storage = make_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def wait_for(condition: Callable[[], object], what: str, timeout: float = PROCESS_TIMEOUT_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def trials_so_far(url: str, name: str) -> list[FrozenTrial]:
    """The study's trials; none while the workers have not created it yet."""
    try:
        return trials_of(url, name)
    except KeyError:
        return []


def running_trial_of(url: str, name: str, pids: set[int]) -> FrozenTrial | None:
    """A RUNNING trial whose objective, in one of the processes ``pids``, has started."""
    trials = trials_so_far(url, name)
    return next((t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get(STARTED) in pids), None)


def assert_exactly(trials: list[FrozenTrial], n_trials: int) -> None:
    """``n_trials`` COMPLETE searched trials (baseline trials are outside the budget), nothing left open, and every
    other trial a surplus or interrupted FAIL."""
    states = [t.state for t in trials]
    assert [t.state for t in trials if not t.user_attrs.get("baseline")].count(TrialState.COMPLETE) == n_trials, states
    assert sum(counts(t) for t in trials) == n_trials
    assert not {TrialState.RUNNING, TrialState.WAITING} & set(states), states


def params(trial: FrozenTrial) -> tuple:
    return tuple(sorted(trial.params.items()))


def test_four_workers_finish_exactly_n_trials_of_a_grid(storage_url: str, study_name: str):
    """Also: four processes on one fresh SQLite file lose no trial (they even race to create its tables)."""
    n_trials = 12
    workers = [Worker(storage_url, study_name, n_trials, sleep=0.05, sampler="grid") for _ in range(4)]

    codes = finish(workers)

    trials = trials_of(storage_url, study_name)
    assert codes == [0] * 4, output(workers)
    assert_exactly(trials, n_trials)
    complete = [params(t) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(complete)) == n_trials, "a grid point ran twice"
    assert all(t.user_attrs.get(SURPLUS_ATTR) for t in trials if t.state == TrialState.FAIL), "a trial was lost"


def test_four_workers_racing_to_create_a_study_enqueue_one_baseline_as_trial_zero(storage_url: str,
                                                                                   study_name: str):
    workers = [Worker(storage_url, study_name, 6, sleep=0.05, baseline=True) for _ in range(4)]

    codes = finish(workers)

    trials = trials_of(storage_url, study_name)
    assert codes == [0] * 4, output(workers)
    assert_exactly(trials, 6)
    assert [t.number for t in trials if t.user_attrs.get("baseline")] == [0], output(workers)
    assert trials[0].state == TrialState.COMPLETE and len([t for t in trials if t.state == TrialState.COMPLETE]) == 7


def test_killed_worker_trial_is_retried(storage_url: str, study_name: str):
    n_trials = 5
    workers = [Worker(storage_url, study_name, n_trials, sleep=2.0) for _ in range(3)]
    victim = wait_for(lambda: running_trial_of(storage_url, study_name, {w.pid for w in workers}),
                      "a trial to start")
    killed = next(w for w in workers if w.pid == victim.user_attrs[STARTED])
    killed.process.send_signal(signal.SIGKILL)

    survivors = [w for w in workers if w is not killed]
    codes = finish(survivors)

    trials = trials_of(storage_url, study_name)
    assert codes == [0, 0], output(survivors)
    assert_exactly(trials, n_trials)
    assert trials[victim.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/hft.db"


def test_sigterm_lets_the_trial_finish_then_stops(sqlite_url: str):
    (worker,) = workers = [Worker(sqlite_url, "sigterm", 4, sleep=2.0)]
    trial = wait_for(lambda: running_trial_of(sqlite_url, "sigterm", {worker.pid}), "a trial to start")

    worker.process.send_signal(signal.SIGTERM)
    (code,) = finish(workers)

    trials = trials_of(sqlite_url, "sigterm")
    assert code == 0, output(workers)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * (trial.number + 1), "no trial after SIGTERM"
    assert "SIGTERM: stopping after the current trial" in output(workers)


def test_second_sigterm_aborts_the_trial_and_requeues_it(sqlite_url: str):
    (worker,) = workers = [Worker(sqlite_url, "twice", 3, sleep=30.0)]
    trial = wait_for(lambda: running_trial_of(sqlite_url, "twice", {worker.pid}), "a trial to start")

    worker.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    worker.process.send_signal(signal.SIGTERM)
    (code,) = finish(workers, timeout=20)

    aborted, retry = trials_of(sqlite_url, "twice")
    assert code == 130, output(workers)
    assert (aborted.state, aborted.number, counts(aborted)) == (TrialState.FAIL, trial.number, False)
    assert (retry.state, retry.params) == (TrialState.WAITING, aborted.params)

    study = run_worker(cheap_spec("twice", sqlite_url, 3), objective=CheapObjective(0.0))  # the next start

    assert_exactly(study.get_trials(), 3)
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(study.trials[retry.number]) == trial.number


POSTGRES_RESTART = "pg_ctlcluster --skip-systemctl-redirect {version} main {action}"


def postgres_cluster(action: str) -> None:
    (version,) = os.listdir("/etc/postgresql")
    subprocess.run(POSTGRES_RESTART.format(version=version, action=action).split(), check=True, timeout=60)


@pytest.fixture
def postgres_comes_back() -> Iterator[None]:
    """Whatever the test does to the server, it is accepting connections again afterwards."""
    yield
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode != 0:
        postgres_cluster("start")


@pytest.mark.postgres
@pytest.mark.slow
def test_workers_survive_a_postgres_restart(postgres_comes_back: None):
    url = postgres_url()
    n_trials = 30
    with own_study(url) as name:
        workers = [Worker(url, name, n_trials, sleep=0.5) for _ in range(3)]
        wait_for(lambda: sum(counts(t) for t in trials_so_far(url, name)) >= 4, "a few finished trials")

        postgres_cluster("restart")
        restarted = datetime.now()
        codes = finish(workers)

        trials = trials_of(url, name)
        assert codes == [0] * 3, output(workers)
        assert_exactly(trials, n_trials)
        assert sum(t.datetime_start > restarted for t in trials) >= 3, "the study ended before the restart"


class ScriptedObjective(CheapObjective):
    """Ends trial *i* as ``outcomes[i]`` says: "ok", or FAIL the way :class:`~hft_search.objective.CVObjective`
    records one ("exception": a bug in a fold; "oom": out of memory)."""

    def __init__(self, outcomes: list[str]) -> None:
        super().__init__(0.0)
        self.outcomes = iter(outcomes)

    def __call__(self, trial: optuna.Trial) -> float:
        value = super().__call__(trial)
        outcome = next(self.outcomes)
        if outcome == "ok":
            return value
        reason = "out of memory in fold 0: CUDA" if outcome == "oom" else "TypeError in fold 0: bad operand"
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr(FAILURE_KIND_ATTR, outcome)
        raise TrialFailure(reason)


class InterruptWhileCreatingATrial(optuna.samplers.RandomSampler):
    """Sends this process SIGINT once, inside ``study.ask()``: after the trial exists, before its objective."""

    fired = False

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        super().before_trial(study, trial)
        if not self.fired:
            self.fired = True
            signal.raise_signal(signal.SIGINT)


class TestInProcess:
    """The worker loop in this process, on SQLite: the cases that need no timing between processes."""

    @pytest.fixture
    def spec(self, sqlite_url: str):
        return cheap_spec("in-process", sqlite_url, 2, heartbeat=HEARTBEAT_S, grace=1)

    def test_enqueued_trials_beyond_n_trials_stay_queued_for_a_later_run(self, spec):
        """Three enqueued trials for two places: two run, the third waits for a run with a larger ``n_trials``
        (as Optuna's ``study.optimize`` leaves it), instead of being burnt as surplus; trial by trial, as a
        caller that checks a budget between trials runs them, each enqueued configuration runs in order."""
        study = open_study(spec)
        for layers in (1, 2, 3):
            study.enqueue_trial({"freeze.layers": layers, "training.epochs": 1})

        optimize(study, CheapObjective(0.0), 2)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.WAITING]
        optimize(study, CheapObjective(0.0), 3)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
        assert [t.params["freeze.layers"] for t in study.trials] == [1, 2, 3]

    def test_a_trial_that_starts_after_the_places_are_taken_is_surplus(self, spec,
                                                                     caplog: pytest.LogCaptureFixture):
        """The race at the end of a study, played in one process: a trial admitted through ``Admission`` when
        ``n_trials`` places are already held ends FAIL, ``surplus: true``, without Optuna's failure warning."""
        study = open_study(spec)
        optimize(study, CheapObjective(0.0), 1)
        admission = Admission(CheapObjective(0.0), 1, None)
        caplog.set_level(logging.INFO)
        optuna.logging.enable_propagation()  # Optuna's "Trial N failed" warnings reach caplog
        try:
            with hiding_surplus_failures(admission):
                study.optimize(admission, n_trials=1, catch=(Surplus,))
        finally:
            optuna.logging.disable_propagation()

        states = [(t.state, t.user_attrs.get(SURPLUS_ATTR)) for t in study.trials]
        assert states == [(TrialState.COMPLETE, None), (TrialState.FAIL, True)]
        assert counted_trials(study) == 1
        assert "Trial 1 failed" not in caplog.text and "trial 1 is surplus" in caplog.text

    def test_a_trial_ended_by_a_lost_storage_is_one_line_in_the_log(self, spec,
                                                                   caplog: pytest.LogCaptureFixture):
        """A database that refuses clients fails one trial per attempt; each is Optuna's one-line warning,
        not a traceback (64 direct workers once wrote about 300,000 lines of them)."""
        study = open_study(spec)

        def refused(trial: optuna.Trial) -> float:
            raise StorageInternalError("commit failed") from sqlalchemy.exc.OperationalError(
                "connect", {}, Exception("FATAL:  sorry, too many clients already"))

        admission = Admission(refused, 1, None)
        caplog.set_level(logging.INFO)
        optuna.logging.enable_propagation()
        try:
            with hiding_surplus_failures(admission), pytest.raises(StorageInternalError):
                study.optimize(admission, n_trials=1, catch=(Surplus,))
        finally:
            optuna.logging.disable_propagation()

        assert "Trial 0 failed" in caplog.text and "StorageInternalError" in caplog.text
        assert "Traceback" not in caplog.text

    def test_a_waiting_worker_retries_the_trial_of_a_dead_one(self, spec):
        study = open_study(spec)
        dead = abandon_a_trial(study, study._storage)

        optimize(study, CheapObjective(0.0), 2, timeout=PROCESS_TIMEOUT_S)

        assert_exactly(study.trials, 2)
        assert study.trials[dead].state == TrialState.FAIL
        assert [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in study.trials] == [None, None, dead]

    def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_retried(self, spec):
        """Optuna never declares such a trial dead; the waiting worker would wait for it for ever."""
        study = open_study(spec)
        orphan = study.ask().number  # created, then the worker died: no heartbeat at all

        optimize(study, CheapObjective(0.0), 2, timeout=PROCESS_TIMEOUT_S)

        assert_exactly(study.trials, 2)
        assert RetryHeartbeatStaleTrialCallback.retried_trial_number(study.trials[-1]) == orphan

    def test_without_heartbeat_a_worker_leaves_instead_of_waiting(self, tmp_path: Path):
        spec = cheap_spec("journal", f"journal:{tmp_path}/hft.journal", 1)
        study = open_study(spec)
        study.ask()  # a RUNNING trial that nobody can tell dead or alive

        optimize(study, CheapObjective(0.0), 1, timeout=30)

        assert [t.state for t in study.trials] == [TrialState.RUNNING]

    def test_a_finished_study_runs_nothing(self, spec):
        run_worker(spec, objective=CheapObjective(0.0))
        study = run_worker(spec, objective=CheapObjective(0.0))

        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2

    def test_a_storage_that_goes_away_right_after_a_trial_is_waited_for(self, spec,
                                                                         monkeypatch: pytest.MonkeyPatch):
        """The failure-streak check reads the finished trial back; a database restarting at that moment is an
        outage like any other (CI saw a worker die there during a PostgreSQL restart)."""
        from optuna.exceptions import StorageInternalError

        from hft_search.workers import _loop

        reads = []

        def flaky_trial_of(study: optuna.Study, number: int) -> FrozenTrial:
            reads.append(number)
            if len(reads) == 1:
                raise StorageInternalError("the database system is shutting down")
            return study.get_trials(deepcopy=False)[number]

        monkeypatch.setattr(_loop, "trial_of", flaky_trial_of)
        study = open_study(spec)

        optimize(study, CheapObjective(0.0), 2, timeout=PROCESS_TIMEOUT_S)

        assert len(reads) >= 2 and [t.state for t in study.trials] == [TrialState.COMPLETE] * 2

    def test_three_exception_failures_in_a_row_stop_the_worker_and_oom_does_not_count(self, spec):
        """A success ends the streak; out-of-memory trials neither extend nor end it."""
        outcomes = ["exception", "exception", "ok", "exception", "oom", "oom", "exception", "exception", "ok"]
        study = open_study(spec)

        with pytest.raises(ConsecutiveFailures, match=r"3 trials in a row failed") as caught:
            optimize(study, ScriptedObjective(outcomes), 20, max_consecutive_failures=3)

        assert [t.user_attrs.get(FAILURE_KIND_ATTR, "ok") for t in study.trials] == outcomes[:8]
        assert "trial 7: TypeError" in str(caught.value) and "trial 2" not in str(caught.value)

    def test_an_interrupt_while_a_trial_is_created_aborts_it_at_its_objective_and_requeues_it(self, spec):
        """Ray cancels a launch's workers by interrupting them anywhere; a plain KeyboardInterrupt raised inside
        Optuna's ``ask`` would leave that trial RUNNING with no number to hand back."""
        study = open_study(spec)
        study.sampler = InterruptWhileCreatingATrial(seed=0)

        with AbortTrial() as abort, pytest.raises(KeyboardInterrupt, match="before the trial's objective began"):
            optimize(study, CheapObjective(0.0), 3, abort=abort)

        aborted, retry = study.get_trials()
        assert (aborted.state, counts(aborted)) == (TrialState.FAIL, False)
        assert retry.state == TrialState.WAITING
        assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == aborted.number

    def test_grid_sampler_stops_at_the_size_of_the_grid(self, sqlite_url: str):
        spec = cheap_spec("grid", sqlite_url, 100, sampler="grid")

        assert target_trials(spec) == GRID_SIZE
        assert target_trials(spec, 5) == 5
        assert target_trials(cheap_spec("tpe", sqlite_url, 100)) == 100


class TestWorkerCommand:
    """``hft-search worker`` itself, on the tiny model: passwords never reach its output."""

    def run_cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hft_search.cli", *args], capture_output=True, text=True,
                              timeout=PROCESS_TIMEOUT_S, env={**os.environ, **(env or {})})

    def spec_file(self, tiny_spec_dict: dict, tmp_path: Path, name: str) -> Path:
        raw = {**tiny_spec_dict, "name": name, "study": {**tiny_spec_dict["study"], "n_trials": 1}}
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def test_unreachable_storage_is_one_masked_line(self, tiny_spec_dict: dict, tmp_path: Path):
        url = unreachable_postgres_url()
        spec = self.spec_file(tiny_spec_dict, tmp_path, "unreachable")

        done = self.run_cli("worker", str(spec), env={"HFT_SEARCH_STORAGE": url})

        assert done.returncode == 2
        assert SECRET not in done.stdout + done.stderr and "Traceback" not in done.stderr
        assert "postgres:***@127.0.0.1" in done.stderr

    def test_threads_sets_the_worker_s_torch_threads(self, tiny_spec_dict: dict, tmp_path: Path):
        spec = self.spec_file(tiny_spec_dict, tmp_path, "threads")

        done = self.run_cli("worker", str(spec), "--threads", "1", "--no-progress")
        refused = self.run_cli("worker", str(spec), "--threads", "0")

        assert done.returncode == 0, done.stderr
        assert "worker uses 1 torch threads (--threads)" in done.stderr
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().endswith("a worker needs at least one thread; give a whole number >= 1.")

    def test_a_bug_in_every_trial_stops_the_worker_with_exit_1(self, tiny_spec_dict: dict, tiny_model_dir: Path,
                                                                tmp_path: Path):
        """A teacher whose config loads (so validate passes) but whose weights do not fails every fold: three
        trials, not the whole budget."""
        teacher = tmp_path / "teacher"
        shutil.copytree(tiny_model_dir, teacher)
        (teacher / "model.safetensors").write_bytes(b"not weights")
        raw = {**tiny_spec_dict, "fixed": {**tiny_spec_dict["fixed"], "distill.teacher": str(teacher),
                                           "distill.alpha": 0.5},
               "study": {**tiny_spec_dict["study"], "n_trials": 10}}
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(raw))

        done = self.run_cli("worker", str(path))

        assert done.returncode == 1, done.stderr
        message = done.stderr.rpartition("\nerror: ")[2]  # each failed trial logs one line before
        assert message.startswith("3 trials in a row failed from an exception") and "Traceback" not in message
        trials = trials_of(raw["study"]["storage"], raw["name"])
        assert [(t.state, t.user_attrs[FAILURE_KIND_ATTR]) for t in trials] == [(TrialState.FAIL, "exception")] * 3

    @pytest.mark.postgres
    def test_password_is_masked_in_the_logs_of_a_run(self, tiny_spec_dict: dict, tmp_path: Path):
        base = postgres_url()  # trust authentication: the password is sent, and ignored
        scheme, _, rest = base.partition("://")
        url = f"{scheme}://{rest.partition('@')[0].partition(':')[0]}:{SECRET}@{rest.partition('@')[2]}"
        name = f"test-workers-{uuid.uuid4().hex[:12]}"
        spec = self.spec_file(tiny_spec_dict, tmp_path, name)
        try:
            done = self.run_cli("--verbose", "worker", str(spec), "--storage", url)

            assert done.returncode == 0, done.stderr
            assert SECRET not in done.stdout + done.stderr
            assert ":***@" in done.stderr and ":***@" in done.stdout
            assert counted_trials(optuna.load_study(study_name=name, storage=base)) == 1
        finally:
            storage = make_storage(base)
            delete_study_if_exists(name, storage)
            assert isinstance(storage, RDBStorage)
            storage.engine.dispose()



def test_sqlite_commits_are_not_flushed_one_by_one(sqlite_url: str):
    """WAL with ``synchronous=NORMAL``: about five times faster trial writes, and safe when a worker dies."""
    storage = make_storage(sqlite_url)
    try:
        with storage.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        storage.engine.dispose()


def test_each_worker_process_samples_its_own_configurations(tmp_path: Path):
    """With the spec's seed in every worker, the first random trials would be the same in all of them."""
    spec = cheap_spec("seeds", f"sqlite:///{tmp_path / 'seeds.db'}", 4, sampler="random")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from cheap_worker import cheap_spec; "
            "from hft_search.workers import worker_seed; print(worker_seed(cheap_spec('s', 'sqlite:///unused.db', 4)))")
    seeds = {int(subprocess.run([sys.executable, "-c", code, str(WORKER.parent)], capture_output=True, text=True,
                                check=True).stdout) for _ in range(2)}
    assert len(seeds) == 2 and worker_seed(spec) not in seeds

    firsts = []
    for seed in seeds:
        study = optuna.create_study(sampler=make_sampler(spec, seed))
        firsts.append(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}).params)
    assert firsts[0] != firsts[1]
