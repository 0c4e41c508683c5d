"""Property-based tests (hypothesis): whatever a user writes, ``validate`` and the read-only commands either
succeed or exit 2 with one message, never with a traceback, and never create a file.

Specs are drawn two ways: random YAML documents (any shape), and a valid spec with one part mutated (a value
replaced by another type, an out-of-range number, a removed or unknown key), which reaches the deeper checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
