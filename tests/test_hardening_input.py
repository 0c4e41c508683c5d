"""Issue 23, items 5, 10 and 11: input that used to be accepted without a word, or refused with a traceback
or a misleading line, is now refused (or warned about) with one line that names the field or file and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import make_sentences, write_csv
from test_hardening import one_error_line, write_spec

from hft_search.cli import main
from hft_search.data import load_data
from hft_search.spec import DataSpec, spec_from_dict

# -- 5. data that cannot be stratified -----------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "max_train_samples", "says"), [
    ([*make_sentences(40), ("a rare one", "rare")], 20, "fewer than 2 rows of class 'rare'"),
    ([*make_sentences(40), ("a rare one", "rare"), ("another rare one", "rare")], 20,
     "the 20-row subsample (data.max_train_samples) has fewer than 2 rows of class 'rare'"),
    ([(f"text number {i}", 0.01 * i + 0.005) for i in range(40)], None, "not whole numbers (e.g. 0.005, 0.015"),
    ([*make_sentences(40), ("a rare one", "rare"), ("another rare one", "rare")], 2,
     "data.max_train_samples: 2 of 42 rows cannot be drawn stratified by 3 classes"),
])
def test_5_data_that_cannot_be_stratified_is_one_line_and_leaves_no_study(
        rows: list, max_train_samples: int | None, says: str, tiny_spec_dict: dict, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    data = write_csv(tmp_path / "rows.csv", rows)
    raw = {**tiny_spec_dict, "data": {"train": str(data), "max_train_samples": max_train_samples}}
    spec = write_spec(tmp_path, raw)
    assert main(["run", str(spec), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert says in line and line.startswith("error: data.") and "least populated" not in line
    assert not (tmp_path / "hft.db").exists()


# -- 10. accepted without a word ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "says"), [
    ("study: {n_trials: 3}\n", "key 'study' appears twice in one mapping"),
    ("fixed: {freeze.layers: true}\n", "fixed.freeze.layers: true/false where a number belongs"),
    ("version: 2\n", "version: format 2 is newer than this hft-search reads (1)"),
    ("storage_override: {}\n", "unknown field"),
])
def test_10_yaml_that_was_silently_reinterpreted_is_refused(text: str, says: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\ndata: {train: t.csv}\nstudy: {n_trials: 2}\n" + text)
    assert main(["validate", str(spec), "--no-model-check"]) == 2
    assert says in one_error_line(capsys)


@pytest.mark.parametrize(("change", "says"), [
    ({"study": {"storage": "mysql://u:pw@127.0.0.1/db"}}, "study.storage: unsupported storage URL 'mysql://u:***@"),
    ({"study": {"storage": "sqlite:///:memory:"}}, "is an in-memory SQLite database"),
    ({"study": {"warm_start": {"study": "a", "storage": "sqlite://"}}}, "study.warm_start.storage: 'sqlite://' is an"),
    ({"search_space": {}, "fixed": {"training.learning_rate": 1e300}},
     "fixed.training.learning_rate: Input should be less than or equal to 1"),
    ({"search_space": {"training.learning_rate": {"float": [1e-320, 1e-3]}}}, "greater than or equal to 0.000000001"),
])
def test_10_a_storage_run_cannot_use_or_an_absurd_rate_fails_validate(change: dict, says: str, tiny_spec_dict: dict,
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    raw = {**tiny_spec_dict, **{k: ({**tiny_spec_dict[k], **v} if k == "study" else v) for k, v in change.items()}}
    assert main(["validate", str(write_spec(tmp_path, raw)), "--no-model-check"]) == 2
    assert says in one_error_line(capsys)


def test_10_an_in_memory_storage_is_refused_on_the_command_line(tiny_spec_dict: dict, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    spec = write_spec(tmp_path, tiny_spec_dict)
    assert main(["run", str(spec), "--storage", "sqlite:///:memory:"]) == 2
    assert "in-memory SQLite database" in one_error_line(capsys)


def test_10_exact_duplicate_rows_are_counted_or_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = make_sentences(30)
    data = write_csv(tmp_path / "dups.csv", [*rows, *rows[:7], rows[0]])
    with caplog.at_level(logging.WARNING, logger="hft_search.data"):
        kept = load_data(DataSpec(train=str(data)))
    assert len(kept.train) == 38
    assert "8 of the 38 training rows used are exact copies of earlier rows" in caplog.text
    assert "data.deduplicate" in caplog.text
    dropped = load_data(DataSpec(train=str(data), deduplicate=True))
    assert len(dropped.train) == len(set(rows)) and dropped.fingerprint != kept.fingerprint


def test_10_copies_are_counted_among_the_rows_max_train_samples_keeps(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    rows = make_sentences(40)
    data = write_csv(tmp_path / "dups.csv", [*rows, *[rows[0]] * 40, *[rows[1]] * 40])
    with caplog.at_level(logging.WARNING, logger="hft_search.data"):
        used = load_data(DataSpec(train=str(data), max_train_samples=30)).train
    copies = len(used) - len(set(zip(used.texts, used.labels.tolist(), strict=True)))
    assert 0 < copies < 80  # the file holds 80 copies; only those among the 30 rows used reach the folds
    assert f"{copies} of the 30 training rows used are exact copies" in caplog.text
    deduplicated = load_data(DataSpec(train=str(data), max_train_samples=30, deduplicate=True)).train
    assert len(set(zip(deduplicated.texts, deduplicated.labels.tolist(), strict=True))) == 30


def test_10_deduplicate_keeps_the_search_hash_of_studies_created_before_it(tiny_spec_dict: dict) -> None:
    plain = spec_from_dict(tiny_spec_dict)
    off = spec_from_dict({**tiny_spec_dict, "data": {**tiny_spec_dict["data"], "deduplicate": False}})
    on = spec_from_dict({**tiny_spec_dict, "data": {**tiny_spec_dict["data"], "deduplicate": True}})
    assert plain.search_hash() == off.search_hash() != on.search_hash()


# -- 11. wording --------------------------------------------------------------------------------------------


def test_11_a_model_check_error_names_the_spec_file(tiny_spec_dict: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    raw = {**tiny_spec_dict, "search_space": {"freeze.layers": {"int": [0, 9]}}}
    assert main(["validate", str(write_spec(tmp_path, raw, "deep.yaml"))]) == 2
    line = one_error_line(capsys)
    assert f"1 problem(s) in {tmp_path / 'deep.yaml'}:" in line and "exceeds the model's 4 blocks" in line


def test_11_a_bad_parquet_file_is_the_one_line_printed(tiny_spec_dict: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really parquet PAR1")
    assert main(["run", str(write_spec(tmp_path, {**tiny_spec_dict, "data": {"train": str(bad)}}))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.train:") and err.count("\n") == 1, err


def test_11_predict_names_its_missing_input_without_talking_of_specs(tiny_model_dir: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", str(tiny_model_dir), "--input", str(tmp_path / "missing.csv")]) == 2
    line = one_error_line(capsys)
    assert "missing.csv does not exist" in line and "spec" not in line
