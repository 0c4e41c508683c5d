"""The live dashboard over real HTTP, and optuna-dashboard reading the same storages."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
import wsgiref.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna_dashboard
import pytest
import sqlalchemy
from report_studies import add_trial, create_hybrid_study, final_model_attr

from hft_search.reports import make_server, serve_dashboard
from hft_search.reports.figures import FIGURES, FINAL_MODEL_FIGURES
from hft_search.reports.html import plotly_js
from hft_search.reports.server import DashboardServer
from hft_search.storage import delete_study_if_exists, make_storage

EVIL_NAME = "<script>alert(1)</script>"


@contextlib.contextmanager
def running(server: DashboardServer) -> Iterator[DashboardServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def get(server: DashboardServer, path: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(server.url + path.lstrip("/"), timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def get_json(server: DashboardServer, path: str) -> Any:
    status, headers, body = get(server, path)
    assert status == 200 and headers["Content-Type"] == "application/json", body
    return json.loads(body)


@pytest.fixture
def storage(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hft.db'}"
    make_storage(url)  # created as `run` creates it: the dashboard opens an existing storage only
    return url


@pytest.fixture
def server(storage: str) -> Iterator[DashboardServer]:
    with running(make_server(storage, port=0)) as instance:
        yield instance


def test_binds_loopback_unless_told_otherwise(storage: str) -> None:
    for function in (make_server, serve_dashboard):
        assert inspect.signature(function).parameters["host"].default == "127.0.0.1"
    with make_server(storage, port=0) as server:
        assert server.server_address[0] == "127.0.0.1"
        assert server.url.startswith("http://127.0.0.1:")


def test_page_and_scripts_come_from_the_server_only(server: DashboardServer, storage: str) -> None:
    status, headers, page = get(server, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert re.findall(r"<script(?![^>]*\ssrc=)", page) == []  # no inline script: the policy forbids them
    assert re.findall(r'<script src="([^"]+)"', page) == ["plotly.min.js", "dashboard.js"]
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self' 'unsafe-eval';")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert f"storage {storage}" in page
    assert get(server, "/plotly.min.js")[2] == plotly_js()
    status, headers, script = get(server, "/dashboard.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript" and "renderFigures" in script


def test_study_list_counts_trials_and_moves_its_revision_when_a_trial_finishes(
    server: DashboardServer, storage: str
) -> None:
    study = create_hybrid_study(storage, name="first", n_complete=4)
    create_hybrid_study(storage, name="second", n_complete=1)
    first, second = get_json(server, "/api/studies")
    assert (first["name"], second["name"]) == ("first", "second")
    assert {key: first[key] for key in ("trials", "complete", "pruned", "failed", "running")} == {
        "trials": 7,
        "complete": 4,
        "pruned": 1,
        "failed": 1,
        "running": 1,
    }
    assert first["best"] == pytest.approx(study.best_value) and first["metric"] == "accuracy"
    assert first["revision"] == get_json(server, "/api/study?name=first")["revision"]

    add_trial(study, {"training.learning_rate": 1e-4, "freeze.layers": 1}, [0.9, 0.9, 0.9])
    moved = get_json(server, "/api/studies")[0]
    assert moved["trials"] == 8 and moved["revision"] != first["revision"]
    assert get_json(server, "/api/studies")[1]["revision"] == second["revision"]


def test_study_endpoint_serves_the_report_figures(server: DashboardServer, storage: str) -> None:
    create_hybrid_study(storage, name="plain", n_complete=3)
    payload = get_json(server, "/api/study?name=plain")
    assert payload["study"] == "plain" and payload["trials"] == 6
    assert [item["id"] for item in payload["figures"]] == list(FIGURES)
    create_hybrid_study(storage, name="trained", n_complete=3, final_model=final_model_attr())
    ids = [item["id"] for item in get_json(server, "/api/study?name=trained")["figures"]]
    assert ids == [*FIGURES, *FINAL_MODEL_FIGURES]


def test_user_strings_reach_the_page_only_as_escaped_json(server: DashboardServer, storage: str) -> None:
    create_hybrid_study(storage, name=EVIL_NAME, n_complete=2, note="<img src=x onerror=alert(2)>")
    _, _, listing = get(server, "/api/studies")
    _, _, payload = get(server, "/api/study?name=" + urllib.parse.quote(EVIL_NAME))
    for body in (listing, payload):
        assert "<" not in body and ">" not in body
    assert json.loads(listing)[0]["name"] == EVIL_NAME
    assert json.loads(payload)["study"] == EVIL_NAME


def test_unknown_study_or_path_is_a_json_404(server: DashboardServer, storage: str) -> None:
    create_hybrid_study(storage, name="only", n_complete=1)
    status, _, body = get(server, "/api/study?name=nope")
    assert status == 404 and "no study 'nope'" in json.loads(body)["error"] and "'only'" in body
    status, _, body = get(server, "/etc/passwd")
    assert status == 404 and json.loads(body) == {"error": "not found"}


@pytest.mark.postgres
def test_postgres_credentials_are_never_shown() -> None:
    """Trust authentication ignores the password, so a URL with one reaches the test database."""
    base = os.environ.get("HFT_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("HFT_TEST_POSTGRES_URL is not set")
    secret = "s3cret-" + uuid.uuid4().hex[:8]
    url = sqlalchemy.engine.make_url(base).set(password=secret).render_as_string(hide_password=False)
    name = f"dashboard-{uuid.uuid4().hex[:8]}"
    create_hybrid_study(make_storage(url), name=name, n_complete=2)
    try:
        with running(make_server(url, port=0)) as server:
            bodies = [
                get(server, path)[2]
                for path in ("/", "/api/studies", f"/api/study?name={name}", "/api/study?name=missing")
            ]
    finally:
        delete_study_if_exists(name, make_storage(url))
    assert all(secret not in body for body in bodies)
    assert ":***@" in bodies[0] and ":***@" in bodies[3]


# --------------------------------------------------------------------------------------------------------------
# optuna-dashboard on the same storage.
# --------------------------------------------------------------------------------------------------------------


def wsgi_get(app: Any, path: str) -> Any:
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
    statuses = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["200 OK"], body[:300]
    return json.loads(body)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_optuna_dashboard_reads_our_storage(tmp_path: Path, kind: str) -> None:
    """``optuna-dashboard URL`` works on our storages; a journal is given as its path, without ``journal:``."""
    ours, theirs = {
        "sqlite": (f"sqlite:///{tmp_path / 'hft.db'}", f"sqlite:///{tmp_path / 'hft.db'}"),
        "journal": (f"journal:{tmp_path / 'hft.log'}", str(tmp_path / "hft.log")),
    }[kind]
    study = create_hybrid_study(make_storage(ours), name="hybrid", n_complete=3)
    app = optuna_dashboard.wsgi(theirs)
    (listed,) = wsgi_get(app, "/api/studies")["study_summaries"]
    assert listed["study_name"] == "hybrid"
    detail = wsgi_get(app, f"/api/studies/{listed['study_id']}")
    assert len(detail["trials"]) == len(study.trials)
    attrs = {attr["key"]: attr["value"] for attr in detail["trials"][0]["user_attrs"]}
    assert json.loads(attrs["fold_scores"]) == study.trials[0].user_attrs["fold_scores"]
    assert {attr["key"] for attr in detail["user_attrs"]} >= {"spec_hash", "metric"}
