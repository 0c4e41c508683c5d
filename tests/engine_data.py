"""Fixtures shared by the engine tests: the tiny BERT as a ``BaseModel`` and tokenized splits.

Loaded as a plugin (``pytest_plugins = ["engine_data"]``) by ``test_strategies.py`` and ``test_training.py``.
The splits are built once per session; tests that need other rows use ``TokenizedSplit.subset``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_sentences

from hft_search.data import TextSplit, TokenizedSplit, tokenize
from hft_search.models import BaseModel, load_base, load_tokenizer

LABELS = ("negative", "positive")


@pytest.fixture(params=["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
def device(request: pytest.FixtureRequest) -> str:
    """Tests that take ``device`` run on the GPU too where there is one (bf16 autocast, fused CUDA AdamW)."""
    return request.param


@pytest.fixture(scope="session")
def tiny_base(tiny_model_dir: Path) -> BaseModel:
    return load_base(str(tiny_model_dir), LABELS)


@pytest.fixture(scope="session")
def tiny_rows(tiny_model_dir: Path) -> TokenizedSplit:
    """96 labelled sentences, tokenized (label 1 = positive)."""
    rows = make_sentences(96)
    split = TextSplit([text for text, _ in rows], np.array([LABELS.index(label) for _, label in rows]))
    return tokenize(split, load_tokenizer(str(tiny_model_dir)), 16)


@pytest.fixture(scope="session")
def tiny_train(tiny_rows: TokenizedSplit) -> TokenizedSplit:
    return tiny_rows.subset(np.arange(64))


@pytest.fixture(scope="session")
def tiny_valid(tiny_rows: TokenizedSplit) -> TokenizedSplit:
    return tiny_rows.subset(np.arange(64, 96))
