"""Issue 23, items 1, 4 and 9: no output is, holds or lies inside one of its command's inputs (``--force`` or
not); a read-only target, a full disk or a corrupt database is one line with exit 2 and leaves nothing behind;
outputs never go through a link and are as readable as any file the user creates.

Every refusal is checked the way a user meets it: the real CLI (in-process), one ``error:`` line naming both
paths, and the inputs byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_hardening import cheap_objective, one_error_line, write_spec

from hft_search import run_study, spec_from_dict
from hft_search.cli import main
from hft_search.exceptions import OutputError
from hft_search.files import os_failure
from hft_search.storage import storage_files

TESTS = Path(__file__).parent


def snapshot(*paths: Path) -> dict[Path, bytes]:
    """The bytes of every file at or under ``paths``, SQLite's transient ``-wal``/``-shm`` left out."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*"))
             if f.is_file() and not f.name.endswith(("-wal", "-shm"))]
    return {f: f.read_bytes() for f in files}


def stored_study(raw: dict, url: str) -> str:
    """A study with one trial in ``url`` (no training), its WAL folded into the database file."""
    spec = spec_from_dict({**raw, "study": {**raw["study"], "storage": url}})
    run_study(spec, n_trials=1, objective=cheap_objective(spec))
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return url


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_1_export_never_replaces_its_storage_or_a_file_of_it(kind: str, tiny_spec_dict: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    url = stored_study(tiny_spec_dict, f"sqlite:///{tmp_path / 'self.db'}" if kind == "sqlite"
                       else f"journal:{tmp_path / 'self.log'}")
    database, side_file = storage_files(url)[:2]  # self.db, self.db-wal / self.log, self.log.lock
    before = snapshot(tmp_path)
    for target in (database, side_file):
        assert main(["export", "--study", "tiny", "--storage", url, "-o", str(target), "--force"]) == 2
        line = one_error_line(capsys)
        assert f"output {target} is the study storage {target}" in line
    assert snapshot(tmp_path) == before


def test_1_export_never_replaces_the_data_nor_writes_into_the_model_folder(
        tiny_spec_dict: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "train.csv"
    shutil.copy(tiny_spec_dict["data"]["train"], data)
    model = tmp_path / "model"
    shutil.copytree(tiny_spec_dict["model"]["name"], model)
    url = stored_study({**tiny_spec_dict, "data": {"train": str(data)}, "model": {"name": str(model)}},
                       f"sqlite:///{tmp_path / 'hft.db'}")
    before = snapshot(tmp_path)
    for target, says in ((data, f"is the training data (data.train) {data}"),
                         (model / "best.yaml", f"lies inside the model folder (model.name) {model}")):
        assert main(["export", "--study", "tiny", "--storage", url, "-o", str(target), "--force"]) == 2
        assert says in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_1_train_never_writes_over_around_or_into_its_inputs(tiny_spec_dict: dict, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    spec = write_spec(folder, {**tiny_spec_dict, "search_space": {}, "fixed": {"training.epochs": 1}})
    model, data = Path(tiny_spec_dict["model"]["name"]), Path(tiny_spec_dict["data"]["train"])
    storage = tmp_path / "study" / "hft.db"
    stored_study(tiny_spec_dict, f"sqlite:///{storage}")
    before = snapshot(tmp_path, model, data)
    cases = [([], folder, f"holds the spec {spec}"),
             ([], model / "out", f"lies inside the model folder (model.name) {model}"),
             ([], data.parent, f"holds the training data (data.train) {data}"),
             (["--storage", f"sqlite:///{storage}"], storage.parent, f"holds the study storage {storage}")]
    for extra, target, says in cases:
        assert main(["train", str(spec), "-o", str(target), "--force", *extra]) == 2
        assert says in one_error_line(capsys)
    assert snapshot(tmp_path, model, data) == before


def test_1_predict_never_replaces_its_input_nor_writes_into_the_model_folder(
        tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "texts.csv"
    table.write_text("text\ngood film\n")
    before = snapshot(table, tiny_model_dir)
    for target, says in ((table, f"is the input table (--input) {table}"),
                         (tiny_model_dir / "predictions.csv", f"lies inside the model folder {tiny_model_dir}")):
        assert main(["predict", str(tiny_model_dir), "--input", str(table), "--output", str(target), "--force"]) == 2
        assert says in one_error_line(capsys)
    assert snapshot(table, tiny_model_dir) == before


def test_1_run_never_stores_its_study_in_its_spec_or_data(tiny_spec_dict: dict, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "train.csv"
    shutil.copy(tiny_spec_dict["data"]["train"], data)
    spec = write_spec(tmp_path, {**tiny_spec_dict, "data": {"train": str(data)}})
    before = snapshot(tmp_path)
    for storage, says in ((f"journal:{data}", f"is the training data (data.train) {data}"),
                          (f"sqlite:///{spec}", f"is the spec {spec}")):
        assert main(["run", str(spec), "--storage", storage, "--no-progress"]) == 2
        assert says in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_1_report_never_replaces_its_storage(tiny_spec_dict: dict, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    url = stored_study(tiny_spec_dict, f"sqlite:///{tmp_path / 'index.html'}")
    before = snapshot(tmp_path)
    assert main(["report", "--study", "tiny", "--storage", url, "-o", str(tmp_path)]) == 2
    assert f"is the study storage {tmp_path / 'index.html'}" in one_error_line(capsys)
    assert snapshot(tmp_path) == before


# -- 4. a read-only target, a full disk, a corrupt database: one line, nothing left ---------------------------


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` (user and mount namespaces) to mount a "
                    "read-only and a full file system")
def test_4_a_read_only_or_full_target_is_one_line_and_leaves_nothing(tiny_spec_dict: dict, tmp_path: Path) -> None:
    url = stored_study(tiny_spec_dict, f"sqlite:///{tmp_path / 'hft.db'}")
    fixed = {**tiny_spec_dict, "search_space": {}, "fixed": {"training.epochs": 1}}
    spec = write_spec(tmp_path, fixed)
    no_data = write_spec(tmp_path, {**fixed, "data": {"train": str(tmp_path / "missing.csv")}}, "no_data.yaml")
    disk = tmp_path / "disk"
    study = ["--study", "tiny", "--storage", url]
    cases = [  # (mode, output, args, cause)
        ("read_only", disk / "best.yaml", ["export", *study, "-o"], "read-only"),
        ("full", disk / "sub" / "best.yaml", ["export", *study, "-o"], "no space left"),
        ("full", disk / "sub", ["report", *study, "-o"], "no space left"),
        # the target is checked before the data is read, let alone a model fitted: no DataError here
        ("read_only", disk / "model", ["train", str(no_data), "-o"], "read-only"),
        ("full", disk / "sub" / "model", ["train", str(spec), "-o"], "no space left"),  # safetensors' own error
    ]
    plan = tmp_path / "cases.json"
    plan.write_text(json.dumps([{"folder": str(disk), "mode": mode, "args": [*args, str(output)]}
                                for mode, output, args, _ in cases]))
    done = subprocess.run(["unshare", "-rm", sys.executable, str(TESTS / "small_disk.py"), str(plan)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(cases), done.stderr[-3000:]
    for (_, output, args, cause), result in zip(cases, results, strict=True):
        assert result["code"] == 2 and not result["traceback"], (args, result)
        assert len(result["errors"]) == 1 and cause in result["errors"][0], (args, result)
        assert str(output if args[0] != "report" else output / "index.html") in result["errors"][0]
        assert result["listing"] == [], (args, result)  # no partial file, no staging or empty folder


def test_4_safetensors_and_os_errors_of_a_full_or_read_only_disk_become_one_line() -> None:
    full = os_failure(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), "m")
    assert isinstance(full, OutputError) and str(full).startswith("cannot write m: no space left on the device")
    chained = RuntimeError("could not save")
    chained.__cause__ = OSError(30, "Read-only file system")
    assert "read-only" in str(os_failure(chained, "m"))
    assert os_failure(ValueError("bad value"), "m") is None


@pytest.mark.parametrize("command", [["status"], ["best"], ["export", "-o", "out.yaml"], ["run"]])
def test_4_a_corrupt_sqlite_database_is_one_line_naming_it(command: list[str], tiny_spec_dict: dict,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    database = tmp_path / "corrupt.db"
    stored_study(tiny_spec_dict, f"sqlite:///{database}")
    with sqlite3.connect(database) as connection:
        page = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'trials'").fetchone()[0]
        size = connection.execute("PRAGMA page_size").fetchone()[0]
    with database.open("r+b") as handle:  # a torn page of the trials table
        handle.seek((page - 1) * size)
        handle.write(b"\xff" * size)
    monkeypatch.chdir(tmp_path)
    if command == ["run"]:
        args = ["run", str(write_spec(tmp_path, tiny_spec_dict)), "--storage", f"sqlite:///{database}"]
    else:
        args = [command[0], "--study", "tiny", "--storage", f"sqlite:///{database}", *command[1:]]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"SQLite database {str(database)!r} is corrupt" in line and "restore it from a backup" in line
    assert not (tmp_path / "out.yaml").exists()


# -- 9. no output through a link; every file of a model as shared as the others -----------------------------


def test_9_report_refuses_a_link_to_a_folder(tiny_spec_dict: dict, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    url = stored_study(tiny_spec_dict, f"sqlite:///{tmp_path / 'hft.db'}")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "reports").symlink_to(tmp_path / "elsewhere")
    assert main(["report", "--study", "tiny", "--storage", url, "-o", str(tmp_path / "reports")]) == 2
    assert "is a symbolic link" in one_error_line(capsys)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_9_train_writes_the_weights_as_readable_as_its_other_files(tiny_spec_dict: dict, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {**tiny_spec_dict, "search_space": {}, "fixed": {"training.epochs": 1}})
    old = os.umask(0o022)
    try:
        assert main(["train", str(spec), "-o", str(tmp_path / "model")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o644}, modes
