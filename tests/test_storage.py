"""Storage URLs → Optuna storages, on the real backends: an SQLite file, PostgreSQL, a journal file.

PostgreSQL tests run against ``$HFT_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
and are skipped when it is unset; when it is set and the server is down they fail, because CI must notice.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hft_search.exceptions import StorageError
from hft_search.storage import (
    DEFAULT_STORAGE_URL,
    STORAGE_ENV_VAR,
    MaskingFilter,
    delete_study_if_exists,
    install_log_masking,
    make_storage,
    mask_url,
    remove_log_masking,
    resolve_storage_url,
)

POSTGRES_ENV = "HFT_TEST_POSTGRES_URL"
HEARTBEAT_S = 1
GRACE_S = 1
SECRET = "s3cr%40t!pw"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"set {POSTGRES_ENV}=postgresql+psycopg://postgres@127.0.0.1:5432/test to run this")
    return url


def open_storage(url: str) -> BaseStorage:
    return make_storage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, max_retries=1)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "journal"],
)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def storage_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/not/yet/there/hft.db"
    if backend == "journal":
        return f"journal:{tmp_path}/not/yet/there/hft.journal"
    return postgres_url()


@pytest.fixture
def study_name() -> str:
    return f"test-storage-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def storage(storage_url: str, study_name: str) -> Iterator[BaseStorage]:
    opened = open_storage(storage_url)
    yield opened
    delete_study_if_exists(study_name, opened)
    if isinstance(opened, RDBStorage):
        opened.engine.dispose()


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    layers = trial.suggest_int("freeze.layers", 0, 6)
    for fold in range(2):
        trial.report(x + fold, step=fold)
    trial.set_user_attr("fold_scores", [x, x + 1])
    trial.set_user_attr("versions", {"optuna": optuna.__version__, "python": "3.x"})
    return x * layers


def abandon_a_trial(study: optuna.Study, storage: BaseStorage) -> int:
    """Start a trial the way a worker does (ask + one heartbeat), then leave it as a killed worker would."""
    trial = study.ask()
    trial.suggest_float("x", -1.0, 1.0)
    storage.record_heartbeat(trial._trial_id)
    return trial.number


class TestBackends:
    """The same behaviour on every backend: what the study and report code relies on."""

    def test_create_then_load_from_a_fresh_storage(self, storage: BaseStorage, storage_url, study_name):
        created = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
        created.set_user_attr("spec", {"name": "ünïcode", "search_space": {"freeze.layers": {"int": [0, 6]}}})

        loaded = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))

        assert loaded.direction == optuna.study.StudyDirection.MAXIMIZE
        assert loaded.user_attrs == created.user_attrs

    def test_trials_round_trip(self, storage: BaseStorage, storage_url, study_name):
        study = optuna.create_study(study_name=study_name, storage=storage)
        study.optimize(objective, n_trials=3)

        loaded = optuna.load_study(study_name=study_name, storage=open_storage(storage_url)).trials

        assert [t.state for t in loaded] == [TrialState.COMPLETE] * 3
        for before, after in zip(study.trials, loaded, strict=True):
            assert (after.params, after.value) == (before.params, before.value)
            assert after.user_attrs == before.user_attrs
            assert after.intermediate_values == before.intermediate_values

    @pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
    @pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
    def test_trial_of_a_dead_worker_fails_and_is_retried_once(
        self, backend: str, storage: BaseStorage, study_name: str, request: pytest.FixtureRequest
    ):
        if backend == "journal":
            request.applymarker(
                pytest.mark.xfail(
                    raises=AttributeError,
                    strict=True,
                    reason="Optuna 5.0's JournalStorage has no heartbeat (optuna#6615)",
                )
            )
        study = optuna.create_study(study_name=study_name, storage=storage)
        first = abandon_a_trial(study, storage)
        optuna.storages.fail_stale_trials(study)
        assert study.trials[first].state == TrialState.RUNNING, "failed before its grace period"

        time.sleep(GRACE_S + 1.1)  # SQLite's clock has a one-second resolution
        optuna.storages.fail_stale_trials(study)
        optuna.storages.fail_stale_trials(study)  # a second sweep must not re-queue it again

        failed, retry = study.trials
        assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.WAITING)
        assert retry.params == failed.params
        assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == first

        second = abandon_a_trial(study, storage)  # picks up the WAITING retry, and dies again
        assert second == retry.number
        time.sleep(GRACE_S + 1.1)
        optuna.storages.fail_stale_trials(study)
        assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL], "max_retries=1"

    def test_delete_study_if_exists(self, storage: BaseStorage, study_name: str):
        optuna.create_study(study_name=study_name, storage=storage)

        assert delete_study_if_exists(study_name, storage)
        assert not delete_study_if_exists(study_name, storage)
        with pytest.raises(KeyError):
            optuna.load_study(study_name=study_name, storage=storage)


class TestSQLite:
    def test_wal_and_busy_timeout(self, tmp_path: Path):
        path = tmp_path / "a" / "b" / "hft.db"
        storage = make_storage(f"sqlite:///{path}")
        try:
            with storage.engine.connect() as connection:  # a connection of the pool Optuna uses
                busy_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
        finally:
            storage.engine.dispose()
        with sqlite3.connect(path) as connection:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]

        assert (mode, busy_ms) == ("wal", 60_000)

    def test_a_trial_state_changes_once_across_processes(self, tmp_path: Path):
        """Two workers sweeping a dead worker's trial must not both mark it FAIL (each would re-queue it).
        SQLite ignores ``FOR UPDATE``, so the state change holds a file lock: another process's change waits for
        it, then finds the trial finished."""
        import threading

        url = f"sqlite:///{tmp_path / 'hft.db'}"
        first, second = make_storage(url), make_storage(url)  # two engines, as two worker processes have
        study = optuna.create_study(storage=first, study_name="lock")
        trial_id = study.ask()._trial_id
        outcome: list[object] = []

        def sweep() -> None:
            try:
                outcome.append(second.set_trial_state_values(trial_id, TrialState.FAIL))
            except optuna.exceptions.UpdateFinishedTrialError as error:
                outcome.append(error)

        with first.state_change_lock():
            sweeper = threading.Thread(target=sweep)
            sweeper.start()
            sweeper.join(timeout=1.0)
            assert sweeper.is_alive() and outcome == []  # waits for the lock
            assert RDBStorage.set_trial_state_values(first, trial_id, TrialState.FAIL)  # the lock is held here
        sweeper.join(timeout=30)

        assert len(outcome) == 1 and isinstance(outcome[0], optuna.exceptions.UpdateFinishedTrialError)
        assert (tmp_path / "hft.db-lock").is_file()
        for storage in (first, second):
            storage.engine.dispose()

    def test_relative_path_is_relative_to_the_working_directory(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        make_storage("sqlite:///runs/hft.db").engine.dispose()

        assert (tmp_path / "runs" / "hft.db").is_file()

    def test_unwritable_location_is_a_storage_error(self, tmp_path: Path):
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")

        with pytest.raises(StorageError, match="cannot open SQLite database"):
            make_storage(f"sqlite:///{blocker}/hft.db")


class TestJournal:
    @pytest.mark.parametrize("spelling", ["journal:{}", "journal://{}"])
    def test_url_spellings_name_the_same_file(self, tmp_path: Path, spelling: str):
        path = tmp_path / "j" / "hft.journal"
        optuna.create_study(study_name="s", storage=make_storage(spelling.format(path)))

        assert path.is_file() and path.stat().st_size > 0

    def test_url_without_a_path(self):
        with pytest.raises(StorageError, match="names no file"):
            make_storage("journal:")


@pytest.mark.postgres
class TestPostgres:
    def test_plain_postgresql_scheme_uses_an_installed_driver(self):
        plain = "postgresql://" + postgres_url().partition("://")[2]
        storage = make_storage(plain)
        try:
            assert storage.engine.dialect.driver == ("psycopg2" if has_psycopg2() else "psycopg")
        finally:
            storage.engine.dispose()

    def test_pool_survives_a_dropped_connection(self, study_name: str, monkeypatch: pytest.MonkeyPatch):
        """A database restart or an idle-connection reaper must cost a reconnect, not a trial."""
        url = postgres_url()
        tag = f"hft-test-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("PGAPPNAME", tag)  # libpq names this storage's connections, and only them
        storage = open_storage(url)
        try:
            study = optuna.create_study(study_name=study_name, storage=storage)
            study.optimize(objective, n_trials=1)
            monkeypatch.delenv("PGAPPNAME")
            killer = sqlalchemy.create_engine(url)
            with killer.connect() as connection:
                killed = connection.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (tag,),
                ).scalar()
            killer.dispose()
            assert killed >= 1

            study.optimize(objective, n_trials=1)

            assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
        finally:
            delete_study_if_exists(study_name, storage)
            storage.engine.dispose()


def has_psycopg2() -> bool:
    return importlib.util.find_spec("psycopg2") is not None


def closed_port() -> int:
    """A local TCP port nobody listens on: connecting to it fails at once with "connection refused"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable_postgres_url() -> str:
    return f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{closed_port()}/test"


class TestConnectionFailure:
    def test_unreachable_postgres_is_a_storage_error_without_the_password(self):
        url = unreachable_postgres_url()

        with pytest.raises(StorageError) as caught:
            make_storage(url)

        message = str(caught.value)
        assert SECRET not in message
        assert mask_url(url) in message
        assert "pg_isready -h 127.0.0.1" in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__

    @pytest.mark.skipif(has_psycopg2(), reason="psycopg2 is installed here")
    def test_missing_driver_names_the_install_command(self):
        url = unreachable_postgres_url().replace("+psycopg:", "+psycopg2:")

        with pytest.raises(StorageError, match=r'pip install "hft_search\[postgres\]"') as caught:
            make_storage(url)

        assert SECRET not in str(caught.value)

    def test_unknown_scheme_lists_the_accepted_forms(self):
        with pytest.raises(StorageError) as caught:
            make_storage(f"mysql://root:{SECRET}@db/hft")

        message = str(caught.value)
        assert SECRET not in message
        assert all(form in message for form in ("sqlite:///", "postgresql+psycopg://", "journal:"))


class TestResolveStorageUrl:
    def test_precedence(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.delenv(STORAGE_ENV_VAR, raising=False)
        assert resolve_storage_url(None, None) == DEFAULT_STORAGE_URL
        assert resolve_storage_url(None, "sqlite:///spec.db") == "sqlite:///spec.db"
        monkeypatch.setenv(STORAGE_ENV_VAR, "journal:env.log")
        assert resolve_storage_url(None, "sqlite:///spec.db") == "journal:env.log"
        assert resolve_storage_url("sqlite:///cli.db", "sqlite:///spec.db") == "sqlite:///cli.db"

    def test_empty_environment_variable_is_ignored(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv(STORAGE_ENV_VAR, "")
        assert resolve_storage_url(None, "sqlite:///spec.db") == "sqlite:///spec.db"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://user:secret@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
        ("postgresql://user@host:5432/db", "postgresql://user@host:5432/db"),
        ("postgresql://user:@host/db", "postgresql://user:***@host/db"),
        ("postgresql://u:p%40ss%3Aw%2Frd!$&*@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pa:ss@h/db", "postgresql://u:***@h/db"),
        # the password runs to the last "@" of the URL: an "@" in the query masks too much, never too little
        ("postgresql://u:raw@at@h:1/db?app=x@y", "postgresql://u:***@y"),
        ("postgresql+psycopg://postgres:pa/ss3cr3t@127.0.0.1:1/x", "postgresql+psycopg://postgres:***@127.0.0.1:1/x"),
        ("postgresql://u:a/b?c#d:e@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:'q\"uo@te'@h/db", "postgresql://u:***@h/db"),
        ("cannot open 'postgresql://u:s/e@c:r@h:5432/db': refused",
         "cannot open 'postgresql://u:***@h:5432/db': refused"),
        (
            "postgresql://u@h/db?sslmode=require&password=secret",
            "postgresql://u@h/db?sslmode=require&password=***",
        ),
        ("postgresql://u@h/db?PASSWORD=secret&x=1", "postgresql://u@h/db?PASSWORD=***&x=1"),
        ("host=h password=secret dbname=d", "host=h password=*** dbname=d"),
        ("sqlite:////abs/hft.db", "sqlite:////abs/hft.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("journal:///abs/hft.journal", "journal:///abs/hft.journal"),
        ("journal:rel/hft.journal", "journal:rel/hft.journal"),
        ("a postgresql://a:b@h/d and mysql://c:d@h/e.", "a postgresql://a:***@h/d and mysql://c:***@h/e."),
    ],
)
def test_mask_url(url: str, masked: str):
    assert mask_url(url) == masked


@pytest.fixture
def masking() -> Iterator[None]:
    install_log_masking()
    yield
    remove_log_masking()


class TestMaskingFilter:
    def test_message_and_args_of_a_child_logger(self, caplog: pytest.LogCaptureFixture):
        url = f"postgresql+psycopg://worker:{SECRET}@db:5432/hft"
        log = logging.getLogger("hft_search.study")
        log.warning("joining %s", url)
        assert SECRET in caplog.text  # the filter is what hides it: without it, it shows

        install_log_masking()
        try:
            log.warning("joining %s", url)
            log.warning(f"joining {url}")
        finally:
            remove_log_masking()

        masked = caplog.records[1:]
        assert [r.getMessage() for r in masked] == ["joining postgresql+psycopg://worker:***@db:5432/hft"] * 2

    def test_traceback_of_a_failed_connection(self, caplog: pytest.LogCaptureFixture, masking: None):
        url = unreachable_postgres_url()
        engine = sqlalchemy.create_engine(url)
        try:
            try:
                engine.connect()
            except sqlalchemy.exc.OperationalError as error:
                raise ConnectionError(f"cannot reach {url}") from error
        except ConnectionError:
            logging.getLogger("hft_search.worker").exception("worker stopped")
        finally:
            engine.dispose()

        assert "Connection refused" in caplog.text
        assert "cannot reach postgresql+psycopg://postgres:***@127.0.0.1" in caplog.text
        assert SECRET not in caplog.text

    def test_optuna_own_handler(self, masking: None):
        (handler,) = [h for h in logging.getLogger("optuna").handlers if type(h) is logging.StreamHandler]
        stream = io.StringIO()
        previous = handler.setStream(stream)
        try:
            optuna.logging.get_logger("optuna.storages._rdb.storage").warning(
                "Caught an error for %s", unreachable_postgres_url()
            )
        finally:
            handler.setStream(previous)

        assert ":***@127.0.0.1" in stream.getvalue()
        assert SECRET not in stream.getvalue()

    def test_installing_twice_adds_one_filter(self, masking: None):
        install_log_masking()

        for target in (logging.getLogger("optuna"), *logging.getLogger("optuna").handlers):
            assert sum(isinstance(f, MaskingFilter) for f in target.filters) == 1
