"""Decoder LLMs (GPT-2, Llama, Qwen2, Qwen3, Mistral) as first-class models, on tiny random ones.

Each family is built from a config (two blocks, 32 wide, a tokenizer built from the test words, without pad token
except Qwen2's, which brings its own as Qwen2.5's does), saved with ``save_pretrained`` and loaded by path, as a
user's folder would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hft_search import HybridConfig, run_study, spec_from_dict
from hft_search.cli import main
from hft_search.data import TextSplit, TokenizedSplit, load_data, tokenize
from hft_search.exceptions import DeviceMemoryError, SpecError
from hft_search.models import BaseModel, layers_of, load_base, load_tokenizer, model_info, truncate
from hft_search.spec import DataSpec
from hft_search.strategies import Setup, prepare
from hft_search.training import compute_importance, fine_tune
from hft_search.training.memory import MemoryEstimate, check_fits, estimate_training_memory
from hft_search.training.precision import FrozenBf16
from tests.tiny_decoders import FAMILIES, build_tiny_decoder

STUDIES = Path(__file__).resolve().parents[1] / "studies"
LABELS = ("negative", "positive")


@pytest.fixture(scope="module", params=FAMILIES)
def decoder_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_decoder(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(scope="module")
def decoder(decoder_dir: Path) -> BaseModel:
    return load_base(str(decoder_dir), LABELS)


@pytest.fixture(scope="module")
def decoder_train(decoder_dir: Path, tiny_csv: Path) -> TokenizedSplit:
    data = load_data(DataSpec(train=str(tiny_csv)))
    return tokenize(data.train.subset(range(48)), load_tokenizer(str(decoder_dir)), 16)


def _family(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["model_type"]


# -- loading: family, parts, pad token --------------------------------------------------------------------


def test_family_parts_and_pad_token(decoder_dir: Path, decoder: BaseModel) -> None:
    family = _family(decoder_dir)
    tokenizer = load_tokenizer(str(decoder_dir))
    model = decoder.fresh(1)
    layers = layers_of(model)
    assert layers.num_layers == 2 and layers.family.decoder
    assert layers.head_parameter_names(model) == {"score.weight"}
    # No LM head in a classifier: even with tie_word_embeddings, no tensor is shared (freezing is per tensor).
    assert len({id(p) for p in model.parameters()}) == len(list(model.named_parameters(remove_duplicate=False)))
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"
    assert model.config.pad_token_id == tokenizer.pad_token_id and model.config.use_cache is False
    assert model.dtype == torch.float32  # the checkpoint is bf16; the template trains in fp32
    assert torch.equal(model.score.weight, decoder.fresh(1).score.weight)
    assert not torch.equal(model.score.weight, decoder.fresh(2).score.weight)
    info = model_info(str(decoder_dir))
    assert (info.family, info.num_layers, info.decoder) == (family, 2, True)
    expected = {"c_attn", "c_proj", "c_fc"} if family == "gpt2" else {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                      "gate_proj", "up_proj", "down_proj"}
    assert set(info.lora_targets) == expected == set(info.default_lora_targets)


@pytest.mark.parametrize("tokenizer_side", ["left", "right"])
def test_padded_batches_give_the_logits_of_unpadded_rows(decoder_dir: Path, decoder: BaseModel,
                                                         tokenizer_side: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(decoder_dir)  # a fresh one: no pad token, padding side as asked
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, tokenizer_side
    texts = ["the film was good", "bad", "a very dull and tedious story it is", "lovely"]
    split = tokenize(TextSplit(texts, np.zeros(len(texts), dtype=np.int64)), tokenizer, 32)
    model = decoder.fresh(0).eval()
    with torch.inference_mode():
        rows = torch.arange(len(texts))
        batched = model(**{k: v for k, v in split.batch(rows).items() if k != "labels"}).logits
        single = torch.cat([model(input_ids=torch.tensor([tokenizer(text).input_ids])).logits for text in texts])
    assert split.attention_mask[:, 0].all()  # real tokens first: the per-batch trim keeps a prefix
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


def test_a_decoder_gets_no_token_type_ids_even_from_a_bert_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = build_tiny_decoder(tmp_path / "gpt2", "gpt2")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)  # returns token_type_ids by default
    split = tokenize(TextSplit(["the film was good"], np.zeros(1, dtype=np.int64)), load_tokenizer(str(folder)), 16)
    assert split.token_type_ids is None
    assert tokenize(TextSplit(["the film"], np.zeros(1, dtype=np.int64)), load_tokenizer(str(tiny_model_dir)),
                    16).token_type_ids is not None  # an encoder keeps them


def test_truncated_student_round_trips(decoder: BaseModel, tmp_path: Path) -> None:
    model = truncate(decoder.fresh(0), 1).eval()
    model.save_pretrained(tmp_path)
    again, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert again.config.num_hidden_layers == 1 and layers_of(again).num_layers == 1
    ids = torch.tensor([[5, 9, 12, 7]])
    torch.testing.assert_close(model(input_ids=ids).logits, again.eval()(input_ids=ids).logits, rtol=0, atol=1e-6)


# -- every knob on a decoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["tensor", "element"])
def test_freeze_importance_and_lora_keep_frozen_and_masked_weights_bit_identical(
        decoder: BaseModel, decoder_train: TokenizedSplit, granularity: str) -> None:
    config = HybridConfig.from_flat({"freeze.enabled": True, "freeze.layers": 1, "lora.enabled": True,
                                     "lora.r": 2, "importance.enabled": True, "importance.threshold": 0.6,
                                     "importance.granularity": granularity, "training.epochs": 2,
                                     "training.batch_size": 16, "training.learning_rate": 1e-2})
    scores = compute_importance(decoder.fresh(0), decoder_train, config.importance, batch_size=16, device="cpu")
    setup = prepare(decoder.fresh(0), config, importance_scores=scores)
    masks = {name: mask.clone() for name, mask in setup.masks.items()}
    frozen = {name for name, p in setup.network.named_parameters() if not p.requires_grad}
    assert bool(masks) == (granularity == "element")
    assert any(".lora_" in name for name, _ in setup.network.named_parameters())
    assert any(name.startswith(("model.layers.1.", "transformer.h.1.")) for name in frozen)  # cut by importance
    before = dict(decoder.fresh(0).named_parameters())
    result = fine_tune(decoder, config, decoder_train, None, device="cpu", importance_scores=scores)
    after = dict(result.model.get_base_model().named_parameters())
    for name in frozen:  # adapted modules keep their frozen weight as ``<module>.base_layer.weight``
        assert torch.equal(after[name], before[name.replace(".base_layer", "")]), name
    for name, keep in masks.items():
        original = before[name.replace(".base_layer", "")]
        assert torch.equal(after[name][~keep], original[~keep]), name
        assert not torch.equal(after[name][keep], original[keep]), name
    assert 0 < result.trainable_fraction < 1


def test_full_cv_study_with_freeze_importance_lora_and_a_distilled_student(decoder_dir: Path, tiny_csv: Path,
                                                                           tmp_path: Path) -> None:
    raw = {
        "name": "decoder-hybrid",
        "data": {"train": str(tiny_csv), "max_train_samples": 48},
        "model": {"name": str(decoder_dir), "max_length": 16},
        "cv": {"folds": 2, "seed": 0},
        "search_space": {"training.learning_rate": {"float": [1e-3, 1e-2], "log": True},
                         "importance.threshold": {"float": [0.5, 0.9]}},
        "fixed": {"freeze.layers": 1, "importance.granularity": "element", "lora.enabled": True, "lora.r": 2,
                  "distill.student_layers": 1, "distill.alpha": 0.5, "training.epochs": 1,
                  "training.batch_size": 16},
        "study": {"n_trials": 1, "storage": f"sqlite:///{tmp_path / 'hft.db'}", "pruner": "none",
                  "baseline": {"trials": 1}, "confirm": False},
        "device": "cpu",
        "cache_dir": str(tmp_path / "cache"),
    }
    study = run_study(spec_from_dict(raw))
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2, [t.user_attrs for t in trials]
    student = [t for t in trials if t.user_attrs["config"]["distill.enabled"]]
    assert student and all(len(t.user_attrs["teacher_scores"]) == 2 for t in student)
    assert all(t.user_attrs["trainable_fraction"] < 1 for t in student)


def test_gradient_checkpointing_trains_the_same_weights(decoder: BaseModel, decoder_train: TokenizedSplit) -> None:
    knobs = {"training.epochs": 1, "training.batch_size": 16, "training.dropout": 0.1}
    plain = fine_tune(decoder, HybridConfig.from_flat(knobs), decoder_train, None, device="cpu")
    checkpointed = fine_tune(decoder, HybridConfig.from_flat({**knobs, "training.gradient_checkpointing": True}),
                             decoder_train, None, device="cpu")
    assert checkpointed.gradient_checkpointing and not plain.gradient_checkpointing  # auto: off when small
    assert not checkpointed.model.is_activation_checkpointing
    for (name, a), (_, b) in zip(plain.model.named_parameters(), checkpointed.model.named_parameters(),
                                 strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_checkpointing_auto_turns_on_from_the_documented_size(decoder: BaseModel,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from hft_search.training import memory

    model = decoder.fresh(0)
    size = sum(p.numel() for p in model.parameters())
    assert memory.CHECKPOINTING_AUTO_PARAMS == 1_000_000_000 and not memory.wants_checkpointing("auto", model)
    monkeypatch.setattr(memory, "CHECKPOINTING_AUTO_PARAMS", size)
    assert memory.wants_checkpointing("auto", model) and not memory.wants_checkpointing(False, model)


# -- memory ------------------------------------------------------------------------------------------------


def test_frozen_projections_stored_in_bf16_come_back_bit_identical(decoder: BaseModel) -> None:
    model = decoder.fresh(0)  # the checkpoint is bf16: frozen projections are exactly bf16 values
    layers = layers_of(model)
    for block in layers.blocks:
        block.requires_grad_(False)
    inexact = next(p for name, p in model.named_parameters() if name.endswith(("q_proj.weight", "c_attn.weight")))
    with torch.no_grad():
        inexact.add_(1e-7)  # no longer representable in bf16: must stay fp32
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stored = FrozenBf16.store(model)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert stored.saved_bytes > 0 and inexact.dtype == torch.float32
    assert all(dtypes[n] == torch.float32 for n in before if "embed" in n or "wte" in n or "norm" in n or "ln_" in n)
    assert model.score.weight.dtype == torch.float32  # trains
    stored.restore()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name]), name


def test_bf16_frozen_projections_compute_what_autocast_computed(decoder: BaseModel,
                                                               decoder_train: TokenizedSplit) -> None:
    """The GPU path's dtypes, checked on the CPU: under bf16 autocast, frozen projections stored in bf16 give
    the logits and gradients of fp32 storage, with LoRA adapters on them (autocast makes the same bf16 copy)."""
    config = HybridConfig.from_flat({"freeze.layers": 1, "lora.enabled": True, "lora.r": 2})

    def prepared() -> Setup:
        torch.manual_seed(0)  # peft draws the LoRA A matrices from the global generator
        return prepare(decoder.fresh(0), config)

    reference, stored = prepared(), prepared()
    assert FrozenBf16.store(stored.network).saved_bytes > 0
    batch = {k: v for k, v in decoder_train.batch(torch.arange(8)).items() if k != "labels"}
    results = []
    for setup in (reference, stored):
        model = setup.model.eval()  # no dropout: the two passes must see the same computation
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(**batch).logits
        logits.float().sum().backward()
        results.append((logits.detach(), {n: p.grad for n, p in setup.network.named_parameters() if p.requires_grad}))
    (logits_a, grads_a), (logits_b, grads_b) = results
    assert torch.equal(logits_a, logits_b) and grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        assert torch.equal(grad, grads_b[name]), name


def test_memory_estimate_counts_what_trains(decoder: BaseModel) -> None:
    config = HybridConfig.from_flat({"lora.enabled": True, "lora.r": 2})
    setup = prepare(decoder.fresh(0), config)
    trained = sum(p.numel() for p in setup.network.parameters() if p.requires_grad)
    estimate = estimate_training_memory(setup.network, setup.masks, batch_size=16, sequence_length=16, bf16=False,
                                        checkpointing=False)
    assert estimate.optimizer == 8 * trained and estimate.gradients == 4 * trained and estimate.masks == 0
    lighter = estimate_training_memory(setup.network, setup.masks, batch_size=16, sequence_length=16, bf16=False,
                                       checkpointing=True)
    assert 0 < lighter.activations < estimate.activations


def test_memory_check_refuses_an_impossible_configuration_in_one_line(decoder: BaseModel, decoder_train: TokenizedSplit,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    estimate = MemoryEstimate(weights=3 * 2**30, gradients=2**30, optimizer=2 * 2**30, masks=0, activations=2**29)
    check_fits(estimate, 8 * 2**30, torch.device("cuda"))  # fits: nothing raised
    monkeypatch.setattr("hft_search.training.loop.free_device_memory", lambda device: 1024)
    with pytest.raises(DeviceMemoryError) as refused:
        fine_tune(decoder, HybridConfig.from_flat({"training.epochs": 1}), decoder_train, None, device="cpu")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("this configuration needs about ") and "0.00 GiB is free" in message
    assert "training.gradient_checkpointing: true" in message


# -- the ready spec, validate and the whole chain --------------------------------------------------------


def _decoder_lora_spec(tmp_path: Path, model: Path, train: Path, test: Path) -> Path:
    """studies/decoder_lora.yaml with its data and model pointed at test files, sized for a tiny model."""
    raw = yaml.safe_load((STUDIES / "decoder_lora.yaml").read_text())
    raw["data"].update(train=str(train), test=str(test), max_train_samples=48)
    raw["model"]["name"] = str(model)
    raw["cv"]["folds"] = 2
    raw["search_space"]["freeze.layers"] = {"int": [1, 2]}  # the tiny model has 2 blocks, Qwen2.5-0.5B 24
    raw["fixed"].update({"training.epochs": 1, "training.batch_size": 16})
    raw["study"].update(n_trials=2, storage=f"sqlite:///{tmp_path / 'decoder.db'}", baseline={"trials": 1},
                        confirm=False)
    raw.update(device="cpu", cache_dir=str(tmp_path / "cache"))
    path = tmp_path / "decoder_lora.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("family", "label", "projection"), [("qwen2", "Qwen2", "q_proj"), ("gpt2", "GPT-2", "c_attn")])
def test_decoder_lora_spec_validates_runs_exports_trains_and_predicts(
        tmp_path: Path, tiny_csv: Path, tiny_test_csv: Path, capsys: pytest.CaptureFixture, family: str, label: str,
        projection: str) -> None:
    model_dir = build_tiny_decoder(tmp_path / family, family)
    spec = _decoder_lora_spec(tmp_path, model_dir, tiny_csv, tiny_test_csv)
    assert main(["validate", str(spec)]) == 0
    out = capsys.readouterr().out
    assert f"# model: {label} decoder (model.family: {family}), 2 blocks" in out and projection in out
    assert yaml.safe_load(out)["model"]["family"] == family
    # the inferred family is not a choice: a spec naming it resumes the same study
    assert spec_from_dict(yaml.safe_load(out)).search_hash() == spec_from_dict(yaml.safe_load(spec.read_text())
                                                                               ).search_hash()

    storage, best, folder = f"sqlite:///{tmp_path / 'decoder.db'}", tmp_path / "best.yaml", tmp_path / "model"
    assert main(["run", str(spec), "--no-progress"]) == 0
    # trial 0 is the baseline full fine-tune; trial 1 the spec's LoRA configuration
    assert main(["export", "--study", "decoder-lora", "--storage", storage, "-o", str(best), "--trial", "1"]) == 0
    assert main(["train", str(best), "-o", str(folder), "--quantize", "int8"]) == 0
    meta = json.loads((folder / "hft_search.json").read_text())
    assert meta["config"]["lora.enabled"] and meta["quantized"]["int8"]["size_mb"] > 0

    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()  # LoRA merged: a plain model
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert not any("lora" in name for name, _ in plain.named_parameters())
    texts = [line.split(",")[0] for line in tiny_test_csv.read_text().splitlines()[1:]]
    with torch.inference_mode():
        probs = plain(**tokenizer(texts, truncation=True, padding=True, return_tensors="pt")).logits.softmax(-1)
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(folder), "--input", str(tiny_test_csv), "--output", str(predictions)]) == 0
    predicted = [line.split(",") for line in predictions.read_text().splitlines()[1:]]
    np.testing.assert_allclose(probs.numpy(), [[float(r[-2]), float(r[-1])] for r in predicted], atol=1e-5)
    accuracy = np.mean([r[2] == r[1] for r in predicted])
    assert accuracy == pytest.approx(meta["metrics"]["accuracy"])  # predict decides as train evaluated


def test_validate_refuses_a_wrong_family_and_unknown_lora_targets(decoder_dir: Path, tiny_csv: Path,
                                                                  tiny_test_csv: Path, tmp_path: Path) -> None:
    from hft_search import validate

    path = _decoder_lora_spec(tmp_path, decoder_dir, tiny_csv, tiny_test_csv)
    raw = yaml.safe_load(path.read_text())
    raw["model"]["family"] = "bert"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=f"model.family: 'bert', but .* is a .* model \\('{_family(decoder_dir)}'\\)"):
        validate(path)
    raw["model"]["family"] = _family(decoder_dir)
    raw["fixed"]["lora.targets"] = ["query"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="fixed.lora.targets: 'query' matches no module of a block; modules there"):
        validate(path)
