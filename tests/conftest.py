"""Shared fixtures: a tiny random BERT and its tokenizer built from the test sentences, and small datasets.

Why build rather than download: tests must run offline and fast; a 4-layer, 32-wide BERT trains a fold in well
under a second on the CPU, yet has every part (embeddings, blocks, pooler, head) the strategies address.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread: tiny models gain nothing from more, and on a busy 2-core machine two threads per
    process thrash (a tiny fold took 3 s with two threads and 0.2 s with one)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_log_masking_from_earlier_tests() -> None:
    """The CLI installs log masking on the root logger's handlers, and pytest reuses its capture handlers
    across tests: take those filters off so that each test starts with logging as it found it."""
    from hft_search.storage import remove_log_masking

    remove_log_masking()


POSITIVE = ["good", "great", "lovely", "excellent", "fun", "charming", "superb", "moving", "brilliant", "sweet"]
NEGATIVE = ["bad", "awful", "boring", "dull", "terrible", "clumsy", "weak", "tedious", "poor", "bland"]
NEUTRAL = ["the", "film", "book", "plot", "was", "really", "quite", "a", "story", "acting", "and", "very", "it", "is"]


def make_sentences(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Balanced (text, label) rows; the label follows the sentiment word, with 10 % label noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        filler = rng.sample(NEUTRAL, 4)
        text = " ".join(filler[:2] + [word] + filler[2:])
        if rng.random() < 0.1:
            label = "negative" if label == "positive" else "positive"
        rows.append((text, label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def build_tiny_bert(folder: Path, num_layers: int = 4) -> Path:
    """A random BERT (``save_pretrained`` folder with tokenizer) small enough for unit tests."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(POSITIVE + NEGATIVE + NEUTRAL))]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", make_sentences(96))


@pytest.fixture(scope="session")
def tiny_test_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data-test") / "test.csv", make_sentences(40, seed=1))


@pytest.fixture
def tiny_spec_dict(tiny_model_dir: Path, tiny_csv: Path, tiny_test_csv: Path, tmp_path: Path) -> dict:
    """A complete spec on the tiny model: 2 folds, 1 epoch, lr and frozen layers searched, SQLite in tmp_path.

    No baseline sweep and no confirmation round (``study.baseline: false``, ``study.confirm: false``): tests
    count and enqueue trials themselves; :func:`with_study_defaults` restores the defaults
    (``tests/test_confirm.py`` runs them end to end)."""
    return tiny_spec(tiny_model_dir, tiny_csv, tiny_test_csv, tmp_path)


def tiny_spec(model: Path, train: Path, test: Path, folder: Path) -> dict:
    """The spec of :func:`tiny_spec_dict`, its storage and cache in ``folder`` (for module-scoped studies)."""
    return {
        "name": "tiny",
        "data": {"train": str(train), "test": str(test)},
        "model": {"name": str(model), "max_length": 16},
        "cv": {"folds": 2, "seed": 0},
        "search_space": {
            "training.learning_rate": {"float": [1e-4, 1e-2], "log": True},
            "freeze.layers": {"int": [0, 2]},
        },
        "fixed": {"training.epochs": 1, "training.batch_size": 16},
        "study": {"n_trials": 2, "storage": f"sqlite:///{folder / 'hft.db'}", "pruner": "none", "baseline": False,
                  "confirm": False},
        "device": "cpu",
        "cache_dir": str(folder / "cache"),
    }


def with_study_defaults(raw: dict) -> dict:
    """A tiny spec with the study defaults a user gets: the baseline sweep, successive halving, the confirmation
    round, and 2 epochs per fold (so the pruner has epochs to compare)."""
    study = {key: value for key, value in raw["study"].items() if key not in ("pruner", "baseline", "confirm")}
    return {**raw, "fixed": {**raw["fixed"], "training.epochs": 2}, "study": study}

