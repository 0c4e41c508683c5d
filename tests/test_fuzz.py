"""Property-based tests (hypothesis): whatever a user writes, ``validate`` and the read-only commands either
succeed or exit 2 with one message, never with a traceback, and never create a file; and whatever output
path a command that writes is given, nothing that existed before changes unless it was the named output and
``--force`` was given.

Specs are drawn two ways: random YAML documents (any shape), and a valid spec with one part mutated (a value
replaced by another type, an out-of-range number, a removed or unknown key), which reaches the deeper checks.
Output paths are drawn among each command's own inputs (the study storage and its side files, the spec, the
data, the model folder and what lies inside it), links to them and to folders, folders, existing files and
new paths.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_hardening import cheap_objective

from hft_search import run_study, spec_from_dict, train_final
from hft_search.cli import main

VALID = {
    "name": "fuzz",
    "data": {"train": "train.csv", "test": "test.csv", "max_train_samples": 100},
    "model": {"name": "minilm", "max_length": 64},
    "cv": {"folds": 5, "seed": 0, "metric": "accuracy"},
    "search_space": {
        "training.learning_rate": {"float": [1.0e-5, 1.0e-3], "log": True},
        "freeze.layers": {"int": [0, 4]},
        "importance.threshold": {"float": [0.0, 0.9]},
        "lora.enabled": {"categorical": [True, False]},
        "lora.r": {"int": [2, 16]},
        "distill.alpha": {"float": [0.0, 1.0]},
    },
    "fixed": {"training.epochs": 2, "training.batch_size": 16, "distill.temperature": 2.0},
    "study": {"direction": "maximize", "sampler": "tpe", "pruner": "wilcoxon", "n_trials": 4,
              "storage": "sqlite:///fuzz.db"},
}

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a nested dict/list document."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated_specs(draw: st.DrawFn) -> object:
    """The valid spec with one value replaced, one key removed or one unknown key added."""
    spec = yaml.safe_load(yaml.safe_dump(VALID))
    path = draw(st.sampled_from(_paths(spec)))
    parent = spec
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=12))] = draw(scalars)
    else:
        parent[path[-1]] = draw(st.one_of(scalars, documents, st.sampled_from([0, -1, 1e308, 10**9, "", []])))
    return spec


def _run_in(folder: Path, args: list[str], capsys: pytest.CaptureFixture) -> None:
    """Run the CLI; assert exit 0, or exit 2 with one ``error:`` message and no traceback; nothing created."""
    before = {p.name for p in folder.iterdir()}
    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        assert code == 2 and err.startswith("error: ") and err.count("\nerror:") == 0, err
    assert {p.name for p in folder.iterdir()} == before


@SETTINGS
@given(document=st.one_of(documents, mutated_specs()))
def test_validate_any_spec_is_a_result_or_one_error(document: object, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    monkeypatch.chdir(folder)
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    _run_in(folder, ["validate", str(spec), "--no-model-check"], capsys)
    spec.unlink()


@SETTINGS
@given(storage=st.one_of(
    st.text(max_size=40),
    st.builds(lambda scheme, rest: f"{scheme}{rest}",
              st.sampled_from(["sqlite:///", "journal:", "postgresql+psycopg://u:p@127.0.0.1:1/", "mysql://", ""]),
              st.text(alphabet="abc/.:@%?#x ", max_size=20))),
    command=st.sampled_from([["status"], ["best"], ["export", "-o", "out.yaml"], ["report"]]))
def test_read_only_commands_on_any_storage_create_nothing(storage: str, command: list[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("HFT_SEARCH_STORAGE", raising=False)
    if not storage or storage.startswith("-"):
        storage = "sqlite:///" + storage
    _run_in(folder, [command[0], "--study", "s", "--storage", storage, *command[1:]], capsys)


# -- file arguments of the commands that write ----------------------------------------------------------------

INPUTS = {  # what each command reads: never changed, whatever output it is given, --force or not
    "export": ["hft.db", "data", "model"],
    "train": ["m/spec.yaml", "data", "model"],
    "predict": ["texts.csv", "trained"],
    "report": ["hft.db"],
    "run": ["search.yaml", "data", "model"],
}

COMMANDS = {  # how a command names its output, whether it takes --force, and the output paths drawn for it
    "export": (["export", "--study", "tiny", "--storage", "sqlite:///hft.db", "-o"], True,
               ["hft.db", "hft.db-wal", "hft.db-journal", "data/train.csv", "data/test.csv", "model/best.yaml",
                "model", "link_to_db", "link_to_data", "link_to_folder/best.yaml", "folder", "other.txt",
                "other.txt/best.yaml", "best.yaml"]),
    "train": (["train", "m/spec.yaml", "-o"], True,
              ["m", "m/spec.yaml", "data", "model", "model/out", ".", "link_to_folder", "link_to_data", "folder",
               "full", "other.txt", "new"]),
    "predict": (["predict", "trained", "--input", "texts.csv", "--output"], True,
                ["texts.csv", "trained/out.csv", "trained", "link_to_texts", "link_to_folder/out.csv", "folder",
                 "full/kept.csv", "data/train.csv", "out.csv"]),
    "report": (["report", "--study", "tiny", "--storage", "sqlite:///hft.db", "-o"], False,
               [".", "model", "data", "folder", "full", "link_to_folder", "other.txt", "new"]),
    "run": (["run", "search.yaml", "--no-progress", "--storage"], False,
            ["hft.db", "search.yaml", "data/train.csv", "model/x.db", "model", "link_to_data", "other.txt",
             "trained", "new.db"]),
}
"""Output paths are relative to a fresh workspace: the command's own inputs, links to inputs and folders,
folders, an unrelated file, a new path. ``run``'s output is its storage (``.db``: SQLite, else a journal)."""

FILE_SETTINGS = settings(max_examples=30, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def template(tiny_model_dir: Path, tiny_csv: Path, tiny_test_csv: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inputs every example starts from, built once: data, a model folder, a trained model, two specs
    (relative paths, so each copy reads its own files), an unrelated file and folders, links."""
    root = tmp_path_factory.mktemp("template")
    (root / "data").mkdir()
    shutil.copy(tiny_csv, root / "data" / "train.csv")
    shutil.copy(tiny_test_csv, root / "data" / "test.csv")
    shutil.copytree(tiny_model_dir, root / "model")
    base = {"name": "tiny", "data": {"train": "data/train.csv", "test": "data/test.csv"},
            "model": {"name": "./model", "max_length": 16}, "cv": {"folds": 2}, "device": "cpu",
            "study": {"n_trials": 1, "storage": "sqlite:///hft.db", "pruner": "none", "baseline": False},
            "cache_dir": "cache"}
    search = {**base, "search_space": {"freeze.layers": {"int": [0, 2]}}, "fixed": {"training.epochs": 1}}
    (root / "search.yaml").write_text(yaml.safe_dump(search))
    (root / "m").mkdir()  # `train m/spec.yaml -o m --force` once deleted its own spec
    fixed = {**base, "data": {"train": "../data/train.csv", "test": "../data/test.csv"},
             "model": {"name": "../model", "max_length": 16}, "fixed": {"training.epochs": 1}}
    (root / "m" / "spec.yaml").write_text(yaml.safe_dump(fixed))
    train_final(spec_from_dict(fixed, base_dir=root / "m"), root / "trained")
    (root / "texts.csv").write_text("text\ngood film\nbad plot\n")
    (root / "other.txt").write_text("not an output")
    (root / "folder").mkdir()
    (root / "full").mkdir()
    (root / "full" / "kept.txt").write_text("kept")
    for link, target in (("link_to_data", "data/train.csv"), ("link_to_folder", "folder"), ("link_to_db", "hft.db"),
                         ("link_to_texts", "texts.csv")):
        (root / link).symlink_to(target)
    shutil.rmtree(root / "cache", ignore_errors=True)
    return root


def _state(root: Path) -> dict[str, tuple[str, object]]:
    """Every entry under ``root``: a file's bytes, a link's target, a folder; the cache and SQLite's transient
    ``-wal``/``-shm`` files (which any reader of the database creates and removes) left out."""
    found: dict[str, tuple[str, object]] = {}
    for folder, names, files in os.walk(root):
        for name in [*names, *files]:
            path = Path(folder, name)
            relative = str(path.relative_to(root))
            if relative.split(os.sep)[0] == "cache" or name.endswith(("-wal", "-shm")):
                continue
            if path.is_symlink():
                found[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                found[relative] = ("folder", None)
            else:
                found[relative] = ("file", path.read_bytes())
    return found


def _may_change(relative: str, output: str, command: str, force: bool, existed: bool) -> bool:
    """Whether a successful ``command`` may change entry ``relative`` (both relative to the workspace, links
    in ``output`` resolved): its named output (replaced only with --force when it ``existed``, an empty folder
    counting as absent; ``report`` regenerates its page in the named folder, ``run`` extends its storage), or
    what lies inside an output folder."""
    if command == "run":
        return relative.startswith(output)
    inside = output == "." or relative == output or relative.startswith(output + "/")
    return inside and (force or not existed or command == "report")


@FILE_SETTINGS
@given(data=st.data(), command=st.sampled_from(sorted(COMMANDS)), force=st.sampled_from([True, True, False]))
@example(data=None, command="export", force=True).via("issue 23: export -o self.db --force")
@example(data=None, command="train", force=True).via("issue 23: train m/spec.yaml -o m --force")
def test_an_output_changes_nothing_but_itself(data: st.DataObject | None, command: str, force: bool,
                                              template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    args, takes_force, targets = COMMANDS[command]
    target = targets[0] if data is None else data.draw(st.sampled_from(targets), label="output")
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work, symlinks=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("HFT_SEARCH_STORAGE", raising=False)
    spec = spec_from_dict(yaml.safe_load((work / "search.yaml").read_text()), base_dir=work)
    run_study(spec, n_trials=1, objective=cheap_objective(spec))  # the study export and report read
    gc.collect()  # close its connections, then fold the WAL in: no later close may rewrite hft.db
    with contextlib.closing(sqlite3.connect(work / "hft.db")) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = _state(work)
    output = target if command != "run" else ("sqlite:///" if target.endswith(".db") else "journal:") + target
    code = main([*args, output, *(["--force"] if force and takes_force else [])])
    err = capsys.readouterr().err
    assert "Traceback" not in err and code in (0, 2), (code, err)
    if code == 2:
        assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    after = _state(work)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    named = str(Path(os.path.realpath(work / target)).relative_to(os.path.realpath(work))) \
        if Path(os.path.realpath(work / target)).is_relative_to(os.path.realpath(work)) else target
    occupied = [k for k in before if k == named or k.startswith(named + "/")]
    existed = named in before and not (before[named][0] == "folder" and occupied == [named])  # empty: absent
    wrong = [k for k in changed if code != 0 or not _may_change(k, named, command, force and takes_force, existed)]
    assert wrong == [], (command, output, force, code, err, wrong)
    touched = [k for k in changed if any(k == i or k.startswith(i + "/") for i in INPUTS[command])]
    assert touched == [], (command, output, force, code, err, touched)  # an input, named as the output or not
