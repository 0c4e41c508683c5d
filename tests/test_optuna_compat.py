"""Every reach into Optuna's private names (``hft_search._optuna_compat``) still behaves as relied upon.

When one of these fails, the installed Optuna moved a private name: fix it in ``hft_search/_optuna_compat.py``
(and only there), or keep Optuna below that release in ``pyproject.toml``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hft_search import _optuna_compat as compat


class _Recording(compat.StaleSweepHookStorage):
    """A storage that remembers the studies of its stale-trial sweeps."""

    swept: list[int]

    def before_stale_sweep(self, study_id: int) -> None:
        self.swept = [*getattr(self, "swept", []), study_id]


def _sqlite(tmp_path: Path, cls: type[RDBStorage] = RDBStorage, **heartbeat: object) -> RDBStorage:
    return compat.experimental(lambda: cls(f"sqlite:///{tmp_path / 'compat.db'}", **heartbeat))


def test_every_private_import_resolves() -> None:
    assert compat.TrialModel.__tablename__ == "trials"
    assert compat.TrialHeartbeatModel.__tablename__ == "trial_heartbeats"
    for column in ("trial_id", "study_id", "state"):
        assert hasattr(compat.TrialModel, column)
    for column in ("trial_id", "heartbeat"):
        assert hasattr(compat.TrialHeartbeatModel, column)
    assert callable(getattr(RDBStorage, compat.STALE_TRIAL_IDS_METHOD))
    assert issubclass(compat.CachedStorage, optuna.storages.BaseStorage)


def test_study_storage_is_the_cached_wrapper_with_the_heartbeat_interval(tmp_path: Path) -> None:
    study = optuna.create_study(storage=_sqlite(tmp_path, heartbeat_interval=7, grace_period=20))
    assert isinstance(compat.study_storage(study), compat.CachedStorage)
    assert compat.heartbeat_interval(study) == 7
    assert compat.heartbeat_interval(optuna.create_study()) is None


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_the_stale_sweep_calls_the_hook_and_the_heartbeat_query_sees_trials_without_beat(tmp_path: Path) -> None:
    storage = _sqlite(tmp_path, _Recording, heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(storage=storage)
    trial = study.ask()  # RUNNING, and ask() records no heartbeat
    study_id = storage.get_study_id_from_name(study.study_name)
    assert compat.running_without_heartbeat(storage, study_id) == [trial._trial_id]
    storage.record_heartbeat(trial._trial_id)
    assert compat.running_without_heartbeat(storage, study_id) == []
    compat.experimental(lambda: optuna.storages.fail_stale_trials(study))
    assert storage.swept == [study_id]
    assert study.trials[0].state == TrialState.RUNNING  # it beat: not stale


def test_the_optimize_logger_names_failed_trials(caplog: pytest.LogCaptureFixture) -> None:
    def fails(trial: optuna.Trial) -> float:
        raise ValueError("on purpose")

    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger=compat.OPTIMIZE_LOGGER):
            optuna.create_study().optimize(fails, n_trials=1, catch=(ValueError,))
    finally:
        optuna.logging.disable_propagation()
    numbers = [compat.failed_trial_number(r.getMessage()) for r in caplog.records if r.name == compat.OPTIMIZE_LOGGER]
    assert numbers and set(numbers) == {0}  # one warning with the error, one with the value
    assert compat.failed_trial_number("Trial 3 finished with value: 1.0") is None


def test_the_in_memory_storage_logger_announces_new_studies(caplog: pytest.LogCaptureFixture) -> None:
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.INFO, logger=compat.IN_MEMORY_STORAGE_LOGGER):
            optuna.create_study(study_name="compat-announced")
    finally:
        optuna.logging.disable_propagation()
    assert any(r.name == compat.IN_MEMORY_STORAGE_LOGGER and "compat-announced" in r.getMessage()
               for r in caplog.records)


def test_the_rdb_storage_logger_is_optunas() -> None:
    import optuna.storages._rdb.storage as rdb_storage

    assert rdb_storage._logger.name == compat.RDB_STORAGE_LOGGER


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_retries_are_built_and_read_without_experimental_warnings(tmp_path: Path) -> None:
    callback = compat.retry_callback(2)
    study = optuna.create_study(storage=_sqlite(tmp_path, heartbeat_interval=60, grace_period=120,
                                                heartbeat_stale_trial_callback=callback))
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExperimentalWarning)
        callback(study, study.trials[0])
        retry = study.trials[-1]
        assert retry.state == TrialState.WAITING and compat.retry_history(retry) == [0]
        assert compat.retry_history(study.trials[0]) == []
        compat.retry_callback(1)
