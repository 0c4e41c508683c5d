"""Model loading and layer access: by path, the packaged name, clear errors, truncation that round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hft_search.exceptions import ModelError
from hft_search.models import layers_of, load_base, resolve_source, truncate


def test_load_by_path_gives_fresh_seeded_heads(tiny_model_dir: Path) -> None:
    base = load_base(str(tiny_model_dir), ("negative", "positive"))
    a, b, c = base.fresh(1), base.fresh(1), base.fresh(2)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert torch.equal(a.bert.pooler.dense.weight, c.bert.pooler.dense.weight)  # pretrained, not re-drawn
    assert a.config.id2label == {0: "negative", 1: "positive"}
    layers = layers_of(a)
    assert layers.num_layers == 4
    assert layers.head_parameter_names(a) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                              "classifier.weight", "classifier.bias"}


def test_truncated_model_round_trips(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = load_base(str(tiny_model_dir), ("negative", "positive")).fresh(0)
    full = sum(p.numel() for p in model.parameters())
    truncate(model, 2).eval()
    assert model.config.num_hidden_layers == 2 and sum(p.numel() for p in model.parameters()) < full
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    saved, loaded = model.state_dict(), again.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    ids = torch.tensor([[2, 10, 11, 3]])
    # Same weights; BLAS may take another kernel path for differently aligned buffers (differences ~1e-9).
    torch.testing.assert_close(model(input_ids=ids).logits, again(input_ids=ids).logits, rtol=0, atol=1e-6)


def test_unsupported_architecture_lists_the_supported(tmp_path: Path) -> None:
    from transformers import ElectraConfig, ElectraForSequenceClassification

    ElectraForSequenceClassification(ElectraConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                                   intermediate_size=32, embedding_size=16, vocab_size=50)
                                     ).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="architecture 'electra' is not supported; supported families: bert, "
                                         "deberta-v2, distilbert, gpt2, llama, mistral, qwen2"):
        load_base(str(tmp_path), ("a", "b"))


def test_missing_folder_and_unknown_hub_name() -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_source("./no/such/model")
    with pytest.raises(ModelError, match="could not be loaded"):
        load_base("no-such-org/no-such-model-xyz", ("a", "b"))


def test_packaged_minilm_resolves() -> None:
    assert (Path(resolve_source("minilm")) / "config.json").is_file()
