"""export → validate → train → load with plain transformers → predict, on the tiny model.

One study and one trained folder are shared by the module (a final fit with int8, fold ensemble and tuned
threshold costs seconds); tests that need another configuration train their own.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hft_search import HybridConfig, load_spec, run_study, spec_from_dict
from hft_search.cli import main
from hft_search.exceptions import ExportError
from hft_search.export import (
    INT8_FOLDER,
    METADATA_FILE,
    TrainedModel,
    decide,
    export_spec,
    load_model,
    predict_file,
    record_final_model,
    train_final,
    tune_threshold,
)
from hft_search.export._spec import final_epochs
from hft_search.spec import knob_names
from tests.conftest import write_csv


def _spec_dict(root: Path, model: Path, train: Path, test: Path, **study: object) -> dict:
    return {
        "name": "exp",
        "data": {"train": str(train), "test": str(test)},
        "model": {"name": str(model), "max_length": 16},
        "cv": {"folds": 2, "seed": 0, "metric": "f1"},
        "search_space": {"training.learning_rate": {"float": [3e-3, 1e-2], "log": True},
                         "freeze.layers": {"int": [0, 1]}},
        # the random tiny BERT needs ~60 steps before it learns anything (see test_objective.py)
        "fixed": {"training.epochs": 10, "training.batch_size": 8, "training.patience": 10,
                  "training.warmup_ratio": 0.0},
        # trial 0: the baseline (a sweep of one rate), trial 1: the one searched trial; no confirmation round
        "study": {"n_trials": 1, "storage": f"sqlite:///{root / 'hft.db'}", "pruner": "none",
                  "baseline": {"trials": 1}, "confirm": False, **study},
        "device": "cpu",
        "cache_dir": str(root / "cache"),
    }


@pytest.fixture(scope="module")
def study_root(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_csv: Path,
               tiny_test_csv: Path) -> Path:
    root = tmp_path_factory.mktemp("export")
    raw = _spec_dict(root, tiny_model_dir, tiny_csv, tiny_test_csv)
    (root / "spec.yaml").write_text(yaml.safe_dump(raw))
    run_study(spec_from_dict(raw))
    return root


def _storage(root: Path) -> str:
    return f"sqlite:///{root / 'hft.db'}"


@pytest.fixture(scope="module")
def best_yaml(study_root: Path) -> Path:
    path = study_root / "best.yaml"
    assert main(["export", "--study", "exp", "--storage", _storage(study_root), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def trained(best_yaml: Path) -> TrainedModel:
    return train_final(load_spec(best_yaml), best_yaml.parent / "models" / "exp", quantize="int8",
                       ensemble_folds=True, tune_threshold_for="f1")


def _load_study(root: Path) -> optuna.Study:
    return optuna.load_study(study_name="exp", storage=_storage(root))


# -- export -------------------------------------------------------------------------------------------------


def test_export_is_a_complete_spec_that_validates(best_yaml: Path, study_root: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(best_yaml)]) == 0
    capsys.readouterr()
    spec = load_spec(best_yaml)
    study = _load_study(study_root)
    best = study.best_trial
    assert spec.search_space == {} and set(spec.fixed) == set(knob_names())  # defaults pinned too
    pinned = {**best.user_attrs["config"], "training.epochs": final_epochs(best.user_attrs["fold_best_epochs"])}
    assert HybridConfig.from_flat(spec.fixed) == HybridConfig.from_flat(pinned)  # epochs: the median best epoch
    assert spec.provenance["cv_epochs"] == best.user_attrs["config"]["training.epochs"]
    prov = spec.provenance
    assert (prov["study"], prov["trial"], prov["value"]) == ("exp", best.number, best.value)
    assert prov["std"] == best.user_attrs["score_std"] and prov["fold_scores"] == best.user_attrs["fold_scores"]
    assert prov["data_fingerprint"] == best.user_attrs["data_fingerprint"] and "torch" in prov["versions"]
    assert prov["trainable_fraction"] == best.user_attrs["trainable_fraction"] and prov["exported"]
    assert spec.data.train == str(Path(spec.data.train).resolve())  # absolute: the spec works from anywhere
    assert yaml.safe_load(best_yaml.read_text())["fixed"]["lora.targets"] is None


def test_export_json_and_a_chosen_trial(study_root: Path) -> None:
    path = study_root / "trial1.json"
    assert main(["export", "--study", "exp", "--storage", _storage(study_root), "-o", str(path),
                 "--trial", "1"]) == 0
    raw = json.loads(path.read_text())
    assert raw["provenance"]["trial"] == 1 and raw["search_space"] == {}
    assert spec_from_dict(raw).fixed == load_spec(path).fixed


def test_export_refuses_to_overwrite_without_force(best_yaml: Path, study_root: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    target = study_root / "taken.yaml"
    target.write_text("keep me")
    args = ["export", "--study", "exp", "--storage", _storage(study_root), "-o", str(target)]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err and target.read_text() == "keep me"
    assert main([*args, "--force"]) == 0
    assert load_spec(target).fixed == load_spec(best_yaml).fixed
    assert not [p for p in study_root.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_export_names_completed_trials_when_the_trial_does_not_exist(study_root: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "--study", "exp", "--storage", _storage(study_root), "-o",
                 str(study_root / "x.yaml"), "--trial", "99"]) == 2
    assert "trial 99" in capsys.readouterr().err and not (study_root / "x.yaml").exists()


def test_multi_objective_export_needs_a_pareto_point(tmp_path: Path, tiny_model_dir: Path, tiny_csv: Path,
                                                     tiny_test_csv: Path, capsys: pytest.CaptureFixture) -> None:
    raw = _spec_dict(tmp_path, tiny_model_dir, tiny_csv, tiny_test_csv, objectives="score+trainable_fraction",
                     sampler="random", n_trials=2)
    raw["fixed"]["training.epochs"] = 1
    study = run_study(spec_from_dict(raw))
    args = ["export", "--study", "exp", "--storage", raw["study"]["storage"], "-o", str(tmp_path / "b.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err
    pareto = sorted(t.number for t in study.best_trials)
    assert "Pareto front" in err and all(f"trial {n}:" in err for n in pareto)
    assert main([*args, "--trial", str(pareto[0])]) == 0
    assert load_spec(tmp_path / "b.yaml").provenance["values"] == study.trials[pareto[0]].values


# -- train ----------------------------------------------------------------------------------------------------


def _test_texts(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], np.array([r["label"] == "positive" for r in rows], dtype=np.int64)


def test_saved_model_predicts_with_plain_transformers_what_train_evaluated(trained: TrainedModel,
                                                                          tiny_test_csv: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(trained.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained.path)
    texts, labels = _test_texts(tiny_test_csv)
    with torch.inference_mode():
        probs = model(**tokenizer(texts, truncation=True, padding=True, return_tensors="pt")).logits.softmax(-1)
    np.testing.assert_allclose(probs.numpy(), trained.test_probs, atol=1e-5)
    meta = json.loads((trained.path / METADATA_FILE).read_text())
    cut = meta["threshold"]["value"]
    predicted = decide(probs.numpy(), cut)
    confusion = [[int(np.sum((labels == t) & (predicted == p))) for p in (0, 1)] for t in (0, 1)]
    assert confusion == meta["metrics"]["confusion_matrix"]
    assert meta["metrics"]["accuracy"] == pytest.approx(float(np.mean(predicted == labels)))
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert tokenizer.model_max_length == 16


def test_metadata_records_spec_provenance_and_metrics(trained: TrainedModel, best_yaml: Path) -> None:
    meta = json.loads((trained.path / METADATA_FILE).read_text())
    assert meta["format_version"] == 1 and meta["labels"] == ["negative", "positive"]
    assert meta["provenance"] == load_spec(best_yaml).provenance
    assert load_spec(best_yaml).model_dump(mode="json") == meta["spec"]
    report = meta["metrics"]["classification_report"]
    assert set(report) >= {"negative", "positive", "accuracy", "macro avg"} and meta["metrics"]["rows"] == 40
    assert meta["training"]["rows"] == 96
    assert meta["training"]["epochs"] == load_spec(best_yaml).fixed["training.epochs"]


def test_final_metrics_are_recorded_in_the_study(trained: TrainedModel, study_root: Path) -> None:
    final = _load_study(study_root).user_attrs["final_model"]
    assert final["path"] == str(trained.path.resolve())
    assert final["metrics"]["confusion_matrix"] == trained.metadata["metrics"]["confusion_matrix"]
    assert final["quantized"]["int8"]["size_mb"] == trained.metadata["quantized"]["int8"]["size_mb"]


def test_an_unreachable_study_is_a_warning_not_an_error(trained: TrainedModel, best_yaml: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    spec = load_spec(best_yaml)
    missing = tmp_path / "gone.db"
    assert not record_final_model(spec, trained.path, trained.metadata, f"sqlite:///{missing}")
    assert not missing.exists()  # not created empty by the attempt
    assert not record_final_model(spec, trained.path, trained.metadata, "mysql://user:secret@host/db")
    assert "could not record the final model" in caplog.text and "secret" not in caplog.text


def test_fold_ensemble_reruns_the_trial_folds(trained: TrainedModel, best_yaml: Path) -> None:
    ensemble = trained.metadata["ensemble"]
    assert ensemble["folds"] == 2 and ensemble["metrics"]["rows"] == 40
    # the same fold code path, seeds and data as the search: the trial's fold scores come back
    assert ensemble["fold_scores"] == pytest.approx(load_spec(best_yaml).provenance["fold_scores"])


def test_threshold_is_tuned_on_out_of_fold_data_only(trained: TrainedModel, best_yaml: Path,
                                                     tiny_test_csv: Path, tmp_path: Path) -> None:
    """The same training data with the test labels flipped: the threshold must not move."""
    texts, labels = _test_texts(tiny_test_csv)
    flipped = write_csv(tmp_path / "flipped.csv",
                        [(t, "negative" if y else "positive") for t, y in zip(texts, labels, strict=True)])
    spec = load_spec(best_yaml)
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"test": str(flipped)})})
    other = train_final(spec, tmp_path / "m", tune_threshold_for="f1")
    first, second = trained.metadata["threshold"], other.metadata["threshold"]
    assert (first["value"], first["oof_score"], first["rows"]) == (second["value"], second["oof_score"], 96)
    # the same model (same training rows), evaluated on the flipped split: true classes swap rows
    np.testing.assert_allclose(other.test_probs, trained.test_probs)
    assert other.metadata["metrics"]["confusion_matrix"] == trained.metadata["metrics"]["confusion_matrix"][::-1]


def test_predict_applies_the_stored_threshold(trained: TrainedModel, tiny_test_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(trained.path), "--input", str(tiny_test_csv), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = decide(trained.test_probs, trained.metadata["threshold"]["value"])
    assert [r["predicted_label"] for r in rows] == [("negative", "positive")[i] for i in expected]
    np.testing.assert_allclose([[r["prob_negative"], r["prob_positive"]] for r in rows], trained.test_probs,
                               atol=1e-6)
    assert set(rows[0]) == {"text", "label", "predicted_label", "prob_negative", "prob_positive"}


def test_int8_model_loads_with_from_pretrained_and_predicts(trained: TrainedModel, tiny_test_csv: Path) -> None:
    from torchao.quantization import Int8Tensor

    quantized = trained.metadata["quantized"]
    assert quantized["path"] == INT8_FOLDER and quantized["scheme"] in ("dynamic", "weight_only")
    assert 0 < quantized["int8"]["size_mb"] < quantized["fp32"]["size_mb"]
    assert quantized["int8"]["latency_ms"] > 0 and 0 <= quantized["int8"]["score"] <= 1
    model = AutoModelForSequenceClassification.from_pretrained(trained.path / INT8_FOLDER)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query.weight, Int8Tensor)
    rows = predict_file(trained.path, tiny_test_csv, int8=True)
    probs = np.array([[r["prob_negative"], r["prob_positive"]] for r in rows])
    assert np.abs(probs - trained.test_probs).max() < 0.05  # int8 rounding, not a different model


def test_kd_into_a_truncated_student_with_lora_saves_the_small_merged_model(
        tiny_model_dir: Path, tiny_csv: Path, tiny_test_csv: Path, tmp_path: Path) -> None:
    raw = _spec_dict(tmp_path, tiny_model_dir, tiny_csv, tiny_test_csv)
    raw["search_space"] = {}
    raw["fixed"].update({"distill.student_layers": 2, "distill.alpha": 0.7, "freeze.layers": 1,
                         "lora.enabled": True, "lora.r": 4, "training.learning_rate": 5e-3})
    trained = train_final(spec_from_dict(raw), tmp_path / "student")
    model, info = AutoModelForSequenceClassification.from_pretrained(trained.path, output_loading_info=True)
    assert model.config.num_hidden_layers == 2 and len(model.bert.encoder.layer) == 2
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with safe_open(trained.path / "model.safetensors", framework="pt") as weights:
        assert not [k for k in weights.keys() if "lora" in k]  # merged, not adapters
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    frozen, adapted = model.bert.embeddings.word_embeddings.weight, model.bert.encoder.layer[0].attention.self.query
    assert torch.equal(frozen, base.bert.embeddings.word_embeddings.weight)  # frozen, no adapter
    assert not torch.equal(adapted.weight, base.bert.encoder.layer[0].attention.self.query.weight)  # LoRA merged
    assert trained.metadata["training"]["total_params"] < sum(p.numel() for p in base.parameters())


def test_train_refuses_a_non_empty_folder_and_a_search_space(best_yaml: Path, study_root: Path,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["train", str(best_yaml), "-o", str(tmp_path / "taken")]) == 2
    assert "--force" in capsys.readouterr().err and (tmp_path / "taken" / "file").read_text() == "x"
    assert main(["train", str(study_root / "spec.yaml"), "-o", str(tmp_path / "new")]) == 2
    assert "export a trial first" in capsys.readouterr().err and not (tmp_path / "new").exists()


# -- predict errors and threshold tuning -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("in.jsonl", '{"text": "good film"}\n{"text": broken\n', "line 2: not valid JSON"),
    ("in.csv", "sentence\ngood film\n", "no column 'text'"),
    ("in.csv", "text\ngood film\n\"\"\n", "empty 'text'"),
    ("in.csv", "text,other\ngood film,1,2\n", "line 2: has 3 fields"),
    ("in.xlsx", "text\n", "unknown extension"),
    ("in.csv", "text\n", "no rows"),
])
def test_predict_bad_input_is_one_clear_error_and_writes_nothing(trained: TrainedModel, tmp_path: Path, name: str,
                                                                 content: str, expected: str,
                                                                 capsys: pytest.CaptureFixture) -> None:
    source, out = tmp_path / name, tmp_path / "out.csv"
    source.write_text(content)
    assert main(["predict", str(trained.path), "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and not out.exists()


def test_predict_reads_parquet_through_the_training_reader(trained: TrainedModel, tiny_test_csv: Path,
                                                            tmp_path: Path) -> None:
    import datasets

    parquet = tmp_path / "test.parquet"
    datasets.load_dataset("csv", data_files=str(tiny_test_csv), split="train").to_parquet(str(parquet))
    from_csv = predict_file(trained.path, tiny_test_csv)
    from_parquet = predict_file(trained.path, parquet, tmp_path / "out.jsonl")
    assert [r["predicted_label"] for r in from_parquet] == [r["predicted_label"] for r in from_csv]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == len(from_csv)


def test_predict_replaces_an_output_only_with_force(trained: TrainedModel, tiny_test_csv: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.csv"
    out.write_text("keep me")
    args = ["predict", str(trained.path), "--input", str(tiny_test_csv), "--output", str(out)]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main([*args, "--force"]) == 0
    assert out.read_text().startswith("text,label,predicted_label")


def test_tune_threshold_maximises_the_metric_between_observed_probabilities() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    positive = np.array([0.1, 0.2, 0.35, 0.3, 0.4, 0.45])  # argmax calls everything negative
    probs = np.stack([1 - positive, positive], axis=1)
    tuned = tune_threshold(labels, probs, "accuracy", ("no", "yes"))
    # cuts 0.275 and 0.375 both get 5 of 6 right; the tie goes to the cut nearer 0.5
    assert tuned.value == pytest.approx(0.375) and tuned.oof_score == pytest.approx(5 / 6)
    assert tuned.oof_score_argmax == 0.5 and tuned.positive_label == "yes"
    with pytest.raises(ExportError, match="binary"):
        tune_threshold(labels, np.full((6, 3), 1 / 3), "f1", ("a", "b", "c"))
    with pytest.raises(ExportError, match="hard decisions"):
        tune_threshold(labels, probs, "roc_auc", ("no", "yes"))


def test_export_spec_rejects_a_study_not_run_by_hft_search(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}", study_name="plain")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ExportError, match="lacks the study user attribute 'spec'"):
        export_spec(study)


def test_load_model_names_what_is_missing(tmp_path: Path, trained: TrainedModel) -> None:
    with pytest.raises(ExportError, match="not a model folder written by hft-search train"):
        load_model(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(trained.path, copy, ignore=shutil.ignore_patterns(INT8_FOLDER))
    with pytest.raises(ExportError, match="--quantize int8"):
        load_model(copy, int8=True)
    meta = json.loads((copy / METADATA_FILE).read_text())
    (copy / METADATA_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ExportError, match="upgrade hft_search"):
        load_model(copy)


# -- the packaged MiniLM on the demo data, through the command line ------------------------------------------


@pytest.mark.slow
def test_quickstart_run_export_train_predict_on_minilm(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    studies = Path(__file__).resolve().parents[1] / "studies"
    raw = yaml.safe_load((studies / "quickstart.yaml").read_text())
    test = studies / raw["data"]["test"]  # the held-out demo reviews, scored by train and then by predict
    with test.open(encoding="utf-8") as handle:
        held_out = [(r["text"], r["label"]) for r in csv.DictReader(handle)]
    storage = f"sqlite:///{tmp_path / 'quickstart.db'}"
    raw["data"].update(train=str(studies / raw["data"]["train"]), test=str(test), max_train_samples=120)
    raw["fixed"]["training.epochs"] = 1
    raw["study"].update(n_trials=2, storage=storage)
    raw["cache_dir"] = str(tmp_path / "cache")
    spec, best, model = tmp_path / "quickstart.yaml", tmp_path / "best.yaml", tmp_path / "models" / "quickstart"
    spec.write_text(yaml.safe_dump(raw))

    assert main(["run", str(spec), "--no-progress"]) == 0
    assert main(["export", "--study", "quickstart", "--storage", storage, "-o", str(best)]) == 0
    assert main(["validate", str(best)]) == 0
    capsys.readouterr()
    assert main(["train", str(best), "-o", str(model), "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "test (160 rows): accuracy" in out and "size MB" in out and "CPU ms / batch of 32" in out
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(model), "--input", str(test), "--output", str(predictions)]) == 0
    with predictions.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    meta = json.loads((model / METADATA_FILE).read_text())
    assert [r["text"] for r in rows] == [text for text, _ in held_out]
    accuracy = np.mean([r["predicted_label"] == label for r, (_, label) in zip(rows, held_out, strict=True)])
    assert accuracy == pytest.approx(meta["metrics"]["accuracy"])  # predict decides as train evaluated
    assert meta["quantized"]["int8"]["size_mb"] < meta["quantized"]["fp32"]["size_mb"]
