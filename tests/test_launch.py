"""``hft-search launch``: workers placed by a real local Ray instance (2 CPUs) on the real PostgreSQL.

The workers run the real worker loop with the near-zero-cost objective of ``tests/cheap_worker.py`` (or, for
the command line, the CV objective on the tiny model). Ray is part of the ``dev`` extra: a missing Ray fails
these tests instead of skipping them. PostgreSQL as in tests/test_storage.py.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml
from cheap_worker import STARTED, CheapObjective, cheap_spec
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from test_storage import postgres_url
from test_workers import (
    GRACE_S,
    HEARTBEAT_S,
    ScriptedObjective,
    assert_exactly,
    own_study,
    trials_of,
    trials_so_far,
    wait_for,
)

from hft_search.exceptions import ClusterError, StorageError
from hft_search.launch import LaunchOutcome, absolute_file_url, default_cpus_per_worker, launch, thread_share

TESTS = Path(__file__).parent
LAUNCH_TIMEOUT_S = 180
"""Generous: Ray starts its worker processes on two cores shared with the database."""

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]


@pytest.mark.postgres
def test_ctrl_c_of_launch_stops_every_worker_and_leaves_nothing_running(tiny_spec_dict: dict, tmp_path: Path):
    url = postgres_url()
    with own_study(url) as name:
        raw = {**tiny_spec_dict, "name": name,
               "study": {**tiny_spec_dict["study"], "n_trials": 200, "heartbeat_interval": HEARTBEAT_S,
                         "grace_period": GRACE_S}}
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump(raw))
        log = (tmp_path / "launch.log").open("w+")
        process = subprocess.Popen([sys.executable, "-m", "hft_search.cli", "launch", str(spec), "--workers", "2",
                                    "--storage", url], stdout=log, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
        try:
            wait_for(lambda: sum(t.state == TrialState.COMPLETE for t in trials_so_far(url, name)) >= 2,
                     "trials to finish", timeout=LAUNCH_TIMEOUT_S)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=LAUNCH_TIMEOUT_S)
        finally:
            process.kill()
        log.seek(0)
        output = log.read()

        trials = trials_of(url, name)
        assert code == 130, output
        assert "cancelling 2 workers" in output
        assert "worker-0" in output and "worker-1" in output, "worker logs reach the launching terminal"
        assert TrialState.RUNNING not in {t.state for t in trials}, output
        assert sum(t.state == TrialState.COMPLETE for t in trials) < 200


def test_launch_command_exits_0_once_the_study_reached_n_trials(tiny_spec_dict: dict, tmp_path: Path):
    """The CV objective on the tiny model, two Ray workers, a relative SQLite path (made absolute for them)."""
    raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "n_trials": 3}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))

    done = subprocess.run([sys.executable, "-m", "hft_search.cli", "launch", str(spec), "--workers", "2",
                           "--storage", "sqlite:///launched.db"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S, env={**os.environ, "PYTHONPATH": str(TESTS.parent)})

    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 of 3 trials counted" in done.stdout and "1 threads" in done.stdout
    assert_exactly(trials_of(f"sqlite:///{tmp_path / 'launched.db'}", "tiny"), 3)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance with 2 CPUs for the module; its workers import ``hft_search`` and ``cheap_worker``."""
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}})
    try:
        yield
    finally:
        ray.shutdown()


def cheap_launch(name: str, url: str, n_trials: int, *, sleep: float, **options: object) -> LaunchOutcome:
    spec = cheap_spec(name, url, n_trials, heartbeat=HEARTBEAT_S, grace=GRACE_S)
    return launch(spec, objective_factory=functools.partial(CheapObjective, sleep), **options)


@pytest.mark.postgres
def test_two_ray_workers_finish_exactly_n_trials_with_their_thread_share(local_ray: None):
    url = postgres_url()
    with own_study(url) as name:
        outcome = cheap_launch(name, url, 8, sleep=0.2, workers=2)

        assert (outcome.done, outcome.counted, outcome.errors) == (True, 8, [])
        assert sorted(w.name for w in outcome.workers) == ["worker-0", "worker-1"]
        assert [w.threads for w in outcome.workers] == [1, 1], "2 CPUs, 2 workers: one torch thread each"
        assert_exactly(trials_of(url, name), 8)
        assert len({t.user_attrs[STARTED] for t in trials_of(url, name)}) == 2, "both workers ran trials"


@pytest.mark.postgres
def test_a_worker_with_two_cpus_runs_two_threads(local_ray: None):
    url = postgres_url()
    with own_study(url) as name:
        outcome = cheap_launch(name, url, 2, sleep=0.0, workers=1, cpus_per_worker=2)

    assert [w.threads for w in outcome.workers] == [2]


@pytest.mark.postgres
def test_workers_that_fail_fast_end_the_launch_short_of_n_trials_with_their_reasons(local_ray: None):
    url = postgres_url()
    with own_study(url) as name:
        spec = cheap_spec(name, url, 20, heartbeat=HEARTBEAT_S, grace=GRACE_S)
        outcome = launch(spec, workers=2, objective_factory=functools.partial(ScriptedObjective, ["exception"] * 20))

    assert not outcome.done and outcome.counted == 6 and outcome.workers == []
    assert len(outcome.errors) == 2
    assert all("3 trials in a row failed from an exception" in error for error in outcome.errors)
    assert all("Traceback" not in error for error in outcome.errors)


@pytest.mark.postgres
def test_a_killed_ray_worker_is_restarted_and_its_trial_retried(local_ray: None):
    url = postgres_url()
    n_trials = 6
    with own_study(url) as name:
        outcomes: list[LaunchOutcome] = []
        launcher = threading.Thread(target=lambda: outcomes.append(
            cheap_launch(name, url, n_trials, sleep=2.0, workers=2)))
        launcher.start()
        victim = wait_for(lambda: next((t for t in trials_so_far(url, name) if t.state == TrialState.RUNNING
                                        and STARTED in t.user_attrs), None), "a trial to start")
        os.kill(victim.user_attrs[STARTED], signal.SIGKILL)
        launcher.join(timeout=LAUNCH_TIMEOUT_S)

        assert not launcher.is_alive(), "launch did not end"
        (outcome,) = outcomes
        trials = trials_of(url, name)
        assert outcome.done and outcome.errors == [], outcome
        assert_exactly(trials, n_trials)
        assert trials[victim.number].state == TrialState.FAIL
        retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim.number]
        assert [(t.state, t.params) for t in retries] == [(TrialState.COMPLETE, victim.params)]
        assert len(outcome.workers) == 2, "the killed worker was started again and finished"


def test_sqlite_on_a_cluster_of_several_nodes_is_refused_naming_postgresql():
    from hft_search.launch import _check_storage_reaches_all_nodes

    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}] * 2
    with pytest.raises(StorageError, match=r"2 nodes.*Use PostgreSQL: --storage postgresql\+psycopg://"):
        _check_storage_reaches_all_nodes("sqlite:////data/hft.db", nodes)
    _check_storage_reaches_all_nodes("sqlite:////data/hft.db", nodes[:1])
    _check_storage_reaches_all_nodes("postgresql+psycopg://u@h/db", nodes)


def test_cpu_share_per_worker():
    nodes = [{"Resources": {"CPU": 2.0}}, {"Resources": {"CPU": 16.0}}]
    assert default_cpus_per_worker(nodes, 2) == 9.0
    assert default_cpus_per_worker(nodes, 1) == 16.0, "one worker runs on one node"
    assert default_cpus_per_worker(nodes[:1], 3) == 0.6666
    assert [thread_share(c) for c in (0.25, 1.0, 0.6666, 2.0, 9.0)] == [1, 1, 1, 2, 9]


def test_relative_file_storage_is_made_absolute_for_ray_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_file_url("sqlite:///hft.db") == f"sqlite:///{tmp_path / 'hft.db'}"
    assert absolute_file_url("journal:runs/x.log") == f"journal:{tmp_path / 'runs' / 'x.log'}"
    assert absolute_file_url("sqlite:////abs/hft.db") == "sqlite:////abs/hft.db"


def test_missing_ray_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = cheap_spec(f"no-ray-{uuid.uuid4().hex[:6]}", f"sqlite:///{tmp_path}/hft.db", 1)
    with pytest.raises(ClusterError, match=r'pip install "hft_search\[ray\]"'):
        launch(spec, workers=1)


def test_a_cuda_spec_without_gpus_per_worker_is_refused(tmp_path: Path):
    spec = cheap_spec("cuda", f"sqlite:///{tmp_path}/hft.db", 1).model_copy(update={"device": "cuda"})
    with pytest.raises(ClusterError, match="pass --gpus-per-worker 1"):
        launch(spec, workers=2)


def test_bad_worker_counts_are_one_clear_line(tiny_spec_dict: dict, tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict))
    done = subprocess.run([sys.executable, "-m", "hft_search.cli", "launch", str(spec), "--workers", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().endswith("--workers 0: launch at least one worker.")
    assert "Traceback" not in done.stderr
