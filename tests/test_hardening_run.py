"""Issue 23, items 6, 7, 8 and the last of 10: ``run`` refuses before it starts what ``validate`` refuses, a
failing trial is one line, a run whose every trial failed exits 1, a run that fails leaves no database, and
the dashboard's mistakes are one line too.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_hardening import one_error_line, write_spec

from hft_search.cli import EXIT_FAILED, main
from hft_search.exceptions import DashboardError
from hft_search.reports import make_server
from hft_search.storage import make_storage

# -- 6. run checks what validate checks; a failing trial is one line -----------------------------------------


@pytest.mark.parametrize("command", ["run", "worker"])
@pytest.mark.parametrize(("change", "says"), [
    ({"model": {"max_length": 128}}, "model.max_length: 128 exceeds the 64 positions"),
    ({"fixed": {"lora.targets": ["query", "nonexistent"]}}, "fixed.lora.targets: 'nonexistent' matches no module"),
    ({"search_space": {"lora.r": {"int": [1, 64]}}}, "search_space.lora.r: 64 exceeds the model's 32 hidden size"),
    ({"fixed": {"distill.teacher": "no-such-teacher", "distill.alpha": 0.5}},
     "fixed.distill.teacher: model 'no-such-teacher' could not be loaded"),
])
def test_6_run_refuses_what_validate_refuses_before_a_study_exists(command: str, change: dict, says: str,
                                                                   tiny_spec_dict: dict, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    raw = {**tiny_spec_dict, **{k: {**tiny_spec_dict.get(k, {}), **v} for k, v in change.items()}}
    spec = write_spec(tmp_path, raw)
    assert main(["validate", str(spec)]) == 2
    assert says in one_error_line(capsys)
    assert main([command, str(spec), "--no-progress"]) == 2
    assert says in one_error_line(capsys)
    assert not (tmp_path / "hft.db").exists()


def test_6_a_failing_trial_is_one_line_and_a_run_whose_every_trial_failed_exits_1(
        tiny_spec_dict: dict, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture) -> None:
    teacher = tmp_path / "teacher"  # a config that validate reads, weights that no trial can load
    shutil.copytree(tiny_model_dir, teacher)
    (teacher / "model.safetensors").write_bytes(b"not weights")
    raw = {**tiny_spec_dict, "fixed": {**tiny_spec_dict["fixed"], "distill.teacher": str(teacher),
                                       "distill.alpha": 0.5}}
    optuna_log = logging.getLogger("optuna")  # Optuna's records do not propagate to the root logger
    optuna_log.addHandler(caplog.handler)
    try:
        assert main(["run", str(write_spec(tmp_path, raw)), "--no-progress"]) == EXIT_FAILED
    finally:
        optuna_log.removeHandler(caplog.handler)
    logged = [(r.name, r.getMessage(), r.exc_info) for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(name, message.split(":")[0]) for name, message, _ in logged] == [
        ("hft_search.objective", "trial 0"), ("hft_search.objective", "trial 1")], logged  # one line per trial
    assert all(exc_info is None and "SafetensorError in fold 0" in message for _, message, exc_info in logged)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "has no completed trial: 2 of 2 failed (trial 0:" in errors[0]


# -- 7. a failed run leaves no database --------------------------------------------------------------------


@pytest.mark.parametrize(("warm_start", "says"), [
    ({"study": "earlier", "storage": "sqlite:///{tmp}/warm.db"}, "study.warm_start.storage: no study storage at"),
    ({"study": "earlier", "storage": "journal:{tmp}/warm.log"}, "study.warm_start.storage: no study storage at"),
    ({"study": "no-such-study"}, "study.warm_start.storage: no study storage at"),  # this study's own storage
])
def test_7_a_warm_start_that_cannot_load_creates_no_database(warm_start: dict, says: str, tiny_spec_dict: dict,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    warm = {k: v.format(tmp=tmp_path) for k, v in warm_start.items()}
    raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "warm_start": warm}}
    spec = write_spec(tmp_path, raw)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", str(spec), "--no-progress"]) == 2
    assert says in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_7_a_warm_start_naming_a_missing_study_creates_no_study(tiny_spec_dict: dict, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    earlier = f"sqlite:///{tmp_path / 'earlier.db'}"
    make_storage(earlier)
    raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "warm_start": {"study": "nope",
                                                                                 "storage": earlier}}}
    assert main(["run", str(write_spec(tmp_path, raw)), "--no-progress"]) == 2
    assert "study.warm_start.study: no study 'nope'" in one_error_line(capsys)
    assert not (tmp_path / "hft.db").exists()


# -- 8. the dashboard ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/missing.db", "journal:{tmp}/missing.log"])
def test_8_the_dashboard_creates_no_storage(url: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["dashboard", "--storage", url.format(tmp=tmp_path), "--port", "0"]) == 2
    assert "no study storage at" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_8_a_port_in_use_out_of_range_or_an_unknown_host_is_one_line(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    storage = f"sqlite:///{tmp_path / 'hft.db'}"
    make_storage(storage)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--storage", storage, "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in one_error_line(capsys)
    assert main(["dashboard", "--storage", storage, "--host", "no-such-host.invalid", "--port", "0"]) == 2
    assert "--host 'no-such-host.invalid' is not a known host name" in one_error_line(capsys)
    with pytest.raises(SystemExit) as usage:
        main(["dashboard", "--storage", storage, "--port", "70000"])
    assert usage.value.code == 2 and "70000 is not a port" in capsys.readouterr().err
    with pytest.raises(DashboardError, match="port 70000 is out of range"):
        make_server(storage, port=70000)


def test_8_ctrl_c_stops_the_dashboard_with_its_own_words(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hft.db'}"
    make_storage(storage)
    process = subprocess.Popen([sys.executable, "-m", "hft_search.cli", "dashboard", "--storage", storage,
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("dashboard on http://127.0.0.1:")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and "dashboard stopped" in err
    assert "trials" not in err and "Traceback" not in err
