"""Hundreds of workers on one PostgreSQL: the same storage URL through a real PgBouncer in transaction pooling.

PgBouncer (``tests/pgbouncer.py``) runs on a free local port in front of ``$HFT_TEST_POSTGRES_URL``'s database.
Under ``CI=true`` a missing ``pgbouncer`` binary fails the tests (``.ci/run`` installs it); elsewhere they skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import optuna
import pytest
from pgbouncer import PeakConnections, PgBouncer, running_pgbouncer
from test_storage import postgres_url
from test_workers import Worker, assert_exactly, finish, output, own_study, trials_of

from hft_search.storage import make_storage

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    url = postgres_url()
    if shutil.which("pgbouncer") is None and not os.path.exists("/usr/sbin/pgbouncer"):
        message = "pgbouncer is not installed: apt-get install -y pgbouncer (bash .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with running_pgbouncer(url) as bouncer:
        yield bouncer


def test_sixteen_workers_through_pgbouncer_finish_exactly_n_on_its_pool(pgbouncer: PgBouncer):
    direct = postgres_url()
    n_trials = 48
    with own_study(pgbouncer.url) as name, PeakConnections(direct) as connections:
        workers = [Worker(pgbouncer.url, name, n_trials, sleep=0.05) for _ in range(16)]
        codes = finish(workers, timeout=300)
        trials = trials_of(pgbouncer.url, name)

    assert codes == [0] * 16, output(workers)
    assert_exactly(trials, n_trials)
    assert connections.samples > 10
    added = connections.peak - connections.before  # not the idle pools earlier tests of this process left
    assert 1 <= added <= pgbouncer.pool_size, f"PostgreSQL saw {added} more connections"


def test_a_pool_of_one_server_connection_is_enough_to_open_the_storage_and_run():
    """Optuna's schema check holds a transaction on one connection while it reads on a second; through a pool
    of one server connection that waited for ever (``query_wait_timeout``). hft_search checks one at a time."""
    with running_pgbouncer(postgres_url(), pool_size=1) as bouncer, own_study(bouncer.url) as name:
        storage = make_storage(bouncer.url)
        study = optuna.create_study(study_name=name, storage=storage)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        storage.engine.dispose()

        assert len(trials_of(bouncer.url, name)) == 3


def test_statements_run_many_times_through_pgbouncer_stay_unprepared(pgbouncer: PgBouncer):
    """psycopg 3 prepares a statement on its fifth run; through transaction pooling that breaks (see
    ``pgbouncer_safe_connect_args``). Two workers interleave the same statements far past five runs."""
    storages = [make_storage(pgbouncer.url) for _ in range(2)]
    with own_study(pgbouncer.url) as name:
        studies = [optuna.create_study(study_name=name, storage=s, load_if_exists=True) for s in storages]
        for _ in range(10):
            for study in studies:
                study.tell(study.ask(), 1.0)
        assert len(trials_of(pgbouncer.url, name)) == 20
    for storage in storages:
        storage.engine.dispose()
