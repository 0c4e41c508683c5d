"""Data loading: every local format through `datasets`, the hub path through the same function, and each error."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hft_search.data import load_data, stratified_subsample, tokenize
from hft_search.exceptions import DataError
from hft_search.spec import DataSpec
from tests.conftest import make_sentences, write_csv

ROWS = make_sentences(40)


def write(path: Path, rows: list[tuple[str, object]]) -> Path:
    frame = pd.DataFrame(rows, columns=["text", "label"])
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")) + "\n")
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_local_format_gives_the_same_rows(tmp_path: Path, suffix: str) -> None:
    data = load_data(DataSpec(train=str(write(tmp_path / f"train{suffix}", ROWS))))
    assert data.label_names == ("negative", "positive")
    assert len(data.train) == 40 and data.train.texts[0] == ROWS[0][0]
    reference = load_data(DataSpec(train=str(write(tmp_path / "ref.csv", ROWS))))
    assert data.fingerprint == reference.fingerprint


def test_integer_labels_become_contiguous_ids_with_names(tmp_path: Path) -> None:
    rows = [(text, 7 if label == "positive" else 3) for text, label in ROWS]
    data = load_data(DataSpec(train=str(write(tmp_path / "t.csv", rows))))
    assert data.label_names == ("3", "7")
    assert set(data.train.labels.tolist()) == {0, 1}


def test_subsample_is_stratified_and_seeded(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", make_sentences(200))
    first = load_data(DataSpec(train=str(path), max_train_samples=50, seed=3))
    again = load_data(DataSpec(train=str(path), max_train_samples=50, seed=3))
    other = load_data(DataSpec(train=str(path), max_train_samples=50, seed=4))
    assert len(first.train) == 50 and first.train.texts == again.train.texts
    assert first.fingerprint == again.fingerprint != other.fingerprint
    full = load_data(DataSpec(train=str(path)))
    assert abs(first.train.labels.mean() - full.train.labels.mean()) < 0.03
    assert len(stratified_subsample(full.train.labels, 10_000, 0)) == 200


def test_text_pairs_are_tokenized_together(tmp_path: Path, tiny_model_dir: Path) -> None:
    from hft_search.models import load_tokenizer

    frame = pd.DataFrame({"a": ["good film", "bad film"] * 3, "b": ["it is", "it was"] * 3, "y": [1, 0] * 3})
    frame.to_csv(tmp_path / "p.csv", index=False)
    data = load_data(DataSpec(train=str(tmp_path / "p.csv"), text_column="a", text_pair_column="b", label_column="y"))
    tokens = tokenize(data.train, load_tokenizer(str(tiny_model_dir)), max_length=16)
    assert tokens.token_type_ids is not None and int(tokens.token_type_ids.max()) == 1


def test_hub_path_through_the_same_function(tmp_path: Path) -> None:
    folder = tmp_path / "hubby"
    folder.mkdir()
    write(folder / "train.csv", ROWS)
    write(folder / "validation.csv", make_sentences(10, seed=5))
    data = load_data(DataSpec(dataset=str(folder), train_split="train", test_split="validation"))
    assert len(data.train) == 40 and data.test is not None and len(data.test) == 10


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.train: file .*nope.csv does not exist"):
        load_data(DataSpec(train=str(tmp_path / "nope.csv")))


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", ROWS)
    with pytest.raises(DataError, match=r"data.text_column: column 'sentence' .* its columns are: text, label"):
        load_data(DataSpec(train=str(path), text_column="sentence"))


def test_single_class(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", [(t, "positive") for t, _ in ROWS])
    with pytest.raises(DataError, match="single class"):
        load_data(DataSpec(train=str(path)))


def test_empty_text(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", [*ROWS, ("  ", "positive")])
    with pytest.raises(DataError, match="empty text"):
        load_data(DataSpec(train=str(path)))


def test_test_labels_unknown_to_training(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", ROWS)
    test = write_csv(tmp_path / "test.csv", [("good film", "neutral"), ("bad film", "negative")])
    with pytest.raises(DataError, match="data.test: .*labels the training data lacks: neutral"):
        load_data(DataSpec(train=str(train), test=str(test)))


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match="unknown extension"):
        load_data(DataSpec(train=str(path)))
