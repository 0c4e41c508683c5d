"""End to end on the tiny model: `run` writes a SQLite study, resumes instead of restarting, records provenance."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hft_search import run_study, spec_from_dict
from hft_search.cli import main
from hft_search.exceptions import StorageError
from hft_search.study import open_study
from hft_search.workers import counted_trials


def write_spec(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_run_two_trials_then_resume(tiny_spec_dict: dict, tmp_path: Path) -> None:
    spec = spec_from_dict(tiny_spec_dict)
    study = run_study(spec)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    attrs = trials[0].user_attrs
    assert len(attrs["fold_scores"]) == 2 and attrs["score_mean"] == pytest.approx(trials[0].value)
    assert 0 < attrs["trainable_fraction"] <= 1 and attrs["data_fingerprint"]
    assert set(attrs["versions"]) >= {"torch", "transformers", "optuna"}
    assert trials[0].intermediate_values.keys() == {0, 1}
    assert Path(tiny_spec_dict["study"]["storage"].removeprefix("sqlite:///")).is_file()

    again = run_study(spec, n_trials=3)  # resume: one more trial, not three
    assert counted_trials(again) == 3 and len(again.get_trials()) == 3
    run_study(spec)  # n_trials=2 already reached: nothing runs
    assert len(again.get_trials()) == 3


def test_resume_with_a_different_search_space_is_refused(tiny_spec_dict: dict) -> None:
    open_study(spec_from_dict(tiny_spec_dict))
    changed = {**tiny_spec_dict, "search_space": {"training.learning_rate": {"float": [1e-5, 1e-4]}}}
    with pytest.raises(StorageError, match="data, model, cv, search space or fixed knobs.*--study-name"):
        open_study(spec_from_dict(changed))


def test_cli_run_best_status(tiny_spec_dict: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_spec(tmp_path, {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "n_trials": 1}})
    assert main(["run", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "search's best: trial 0" in out and "folds [" in out and "hft.db" in out
    storage = tiny_spec_dict["study"]["storage"]
    assert main(["best", "--study", "tiny", "--storage", storage, "--format", "json"]) == 0
    assert '"fold_scores"' in capsys.readouterr().out
    assert main(["status", "--study", "tiny", "--storage", storage]) == 0
    assert "COMPLETE" in capsys.readouterr().out
    assert main(["best", "--study", "nope", "--storage", storage]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_cli_validate_reports_all_problems_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_spec(tmp_path, {
        "name": "bad", "data": {"train": "x.csv"}, "cv": {"folds": 1},
        "search_space": {"training.learning_rate": {"float": [1e-3, 1e-5]}, "freeze.layerz": {"int": [0, 2]}},
    })
    assert main(["validate", str(path), "--no-model-check"]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err and "Traceback" not in err
    assert "search_space.training.learning_rate: low must be below high" in err
    assert "search_space.freeze.layerz: unknown knob" in err and "cv.folds:" in err


def test_cli_one_clear_line_for_missing_file_column_and_model(tiny_spec_dict: dict, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    cases = [
        ({"data": {**tiny_spec_dict["data"], "train": str(tmp_path / "missing.csv")}}, "data.train: file"),
        ({"data": {**tiny_spec_dict["data"], "text_column": "sentence"}}, "data.text_column: column 'sentence'"),
        ({"model": {"name": "./no-such-model"}}, "no-such-model does not exist; check model.name"),
    ]
    for change, expected in cases:
        path = write_spec(tmp_path, {**tiny_spec_dict, **change})
        assert main(["run", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err


def test_validate_checks_layers_against_the_model(tiny_spec_dict: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    raw = {**tiny_spec_dict, "search_space": {"freeze.layers": {"int": [0, 9]}}}
    assert main(["validate", str(write_spec(tmp_path, raw))]) == 2
    assert "search_space.freeze.layers: 9 exceeds the model's 4 blocks" in capsys.readouterr().err


def test_study_loads_with_plain_optuna(tiny_spec_dict: dict) -> None:
    spec = spec_from_dict({**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "n_trials": 1}})
    run_study(spec)
    study = optuna.load_study(study_name="tiny", storage=tiny_spec_dict["study"]["storage"])
    assert study.user_attrs["metric"] == "accuracy" and len(study.trials) == 1
