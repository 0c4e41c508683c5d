"""The exported configuration reproduces what the search scored: teacher knobs, epochs, verify, cache keys.

Tiny random BERT on the CPU: there the fine-tunes are deterministic, so ``verify`` must find bit-identical
fold scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

from hft_search import load_spec, run_study, spec_from_dict
from hft_search.caching import Cache, folder_digest
from hft_search.cli import main
from hft_search.cv import CrossValidator
from hft_search.export import export_spec, verify_spec
from hft_search.export._train import config_of, final_teacher, fit_final, search_setting
from hft_search.spec import HybridConfig
from hft_search.study import open_study
from hft_search.training import compute_metric, fine_tune, predict_logits


def _raw(root: Path, model: Path, train: Path, test: Path, *, name: str, fixed: dict, space: dict) -> dict:
    return {
        "name": name,
        "data": {"train": str(train), "test": str(test)},
        "model": {"name": str(model), "max_length": 16},
        "cv": {"folds": 2, "seed": 0, "metric": "accuracy"},
        "search_space": space,
        "fixed": {"training.batch_size": 8, "training.warmup_ratio": 0.0, **fixed},
        "study": {"n_trials": 2, "storage": f"sqlite:///{root / 'hft.db'}", "pruner": "none", "sampler": "random",
                  "baseline": False, "confirm": False},
        "device": "cpu",
        "cache_dir": str(root / "cache"),
    }


@pytest.fixture(scope="module")
def kd_study(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_csv: Path,
             tiny_test_csv: Path) -> tuple[Path, Path]:
    """A KD study into a 1-block student with element importance, searching the student's learning rate."""
    root = tmp_path_factory.mktemp("kd")
    raw = _raw(root, tiny_model_dir, tiny_csv, tiny_test_csv, name="kd",
               space={"training.learning_rate": {"float": [3e-3, 1e-2], "log": True}},
               fixed={"training.epochs": 3, "distill.student_layers": 1, "distill.alpha": 0.5,
                      "distill.teacher_epochs": 2, "distill.teacher_learning_rate": 5e-3,
                      "importance.enabled": True, "importance.granularity": "element",
                      "importance.threshold": 0.5})
    run_study(spec_from_dict(raw))
    best = root / "best.yaml"
    assert main(["export", "--study", "kd", "--storage", f"sqlite:///{root / 'hft.db'}", "-o", str(best)]) == 0
    return root, best


def test_kd_export_pins_the_trials_teacher_not_the_students_training_knobs(kd_study: tuple[Path, Path]) -> None:
    root, best = kd_study
    study = optuna.load_study(study_name="kd", storage=f"sqlite:///{root / 'hft.db'}")
    trial = study.best_trial
    spec = load_spec(best)
    assert trial.params["training.learning_rate"] != 5e-3  # the student's searched rate ...
    assert spec.fixed["distill.teacher_learning_rate"] == 5e-3  # ... never becomes the teacher's
    assert spec.fixed["distill.teacher_epochs"] == 2 and spec.fixed["distill.teacher_batch_size"] == 32
    assert trial.user_attrs["teacher"] == {"learning_rate": 5e-3, "epochs": 2, "batch_size": 32, "seeds": [0, 1]}
    assert spec.provenance["teacher"] == trial.user_attrs["teacher"]
    assert trial.user_attrs["seeds"] == [0, 1]
    full = CrossValidator(spec).base.template
    # the 1-block student's own count (no adapters here, so all of its parameters), not the full model's
    assert trial.user_attrs["student_params"] == trial.user_attrs["total_params"]
    assert trial.user_attrs["student_params"] < sum(p.numel() for p in full.parameters())


def test_the_teacher_train_fits_is_the_trials_teacher(kd_study: tuple[Path, Path]) -> None:
    # train's own teacher code (final_teacher: knobs, seed), fitted on fold 0's training part, scores fold 0's
    # validation part exactly as the trial's fold-0 teacher did (cv.seed 0: fold 0's seed is train's seed).
    root, best = kd_study
    study = optuna.load_study(study_name="kd", storage=f"sqlite:///{root / 'hft.db'}")
    spec = load_spec(best)
    cv = CrossValidator(spec, cache=Cache(None))
    train_idx, valid_idx = cv.folds[0]
    assert cv.fold_seed(0) == spec.cv.seed
    teacher = final_teacher(spec, cv.base, cv.tokens.subset(train_idx), labels=cv.data.label_names,
                            device=cv.device)
    valid = cv.tokens.subset(valid_idx)
    probs = predict_logits(teacher, valid).softmax(-1)
    assert compute_metric("accuracy", valid.labels.numpy(), probs.numpy()) == \
        study.best_trial.user_attrs["teacher_scores"][0]


def test_verify_agrees_bit_for_bit_on_every_fold(kd_study: tuple[Path, Path],
                                                 capsys: pytest.CaptureFixture) -> None:
    _, best = kd_study
    verification = verify_spec(load_spec(best))
    assert verification.agrees and verification.tolerance == 0.0
    assert [c.recorded for c in verification.checks] == [c.rerun for c in verification.checks]
    assert main(["verify", str(best), "--folds", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 fold(s) on cpu: the re-run scores agree with the recorded ones (bit-identical)" in out


def test_verify_exits_1_when_a_recorded_score_is_not_reproduced(kd_study: tuple[Path, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    _, best = kd_study
    raw = yaml.safe_load(best.read_text())
    raw["provenance"]["fold_scores"][0] += 0.01  # a consistent record (value and std follow) that is wrong
    raw["provenance"]["value"] = float(np.mean(raw["provenance"]["fold_scores"]))
    raw["provenance"]["std"] = float(np.std(raw["provenance"]["fold_scores"]))
    raw["data"]["train"] = str((best.parent / raw["data"]["train"]).resolve())
    raw["data"]["test"] = str((best.parent / raw["data"]["test"]).resolve())
    tampered = tmp_path / "tampered.yaml"
    tampered.write_text(yaml.safe_dump(raw))
    assert main(["verify", str(tampered), "--folds", "0"]) == 1
    assert "DIFFERS" in capsys.readouterr().out
    assert main(["verify", str(tampered), "--folds", "5"]) == 2
    assert "fold(s) 5 were not recorded" in capsys.readouterr().err


@pytest.fixture(scope="module")
def early_study(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_csv: Path,
                tiny_test_csv: Path) -> tuple[Path, Path]:
    """Two configurations on 3 folds of up to 6 epochs whose folds stop early (patience 2) after scoring
    different values: the exported final fit is shorter than the searched run."""
    root = tmp_path_factory.mktemp("early")
    raw = _raw(root, tiny_model_dir, tiny_csv, tiny_test_csv, name="early",
               space={"training.learning_rate": {"float": [1e-3, 1e-2], "log": True}},
               fixed={"training.epochs": 6, "training.batch_size": 4, "training.patience": 2,
                      "training.warmup_ratio": 0.1})
    raw["cv"]["folds"] = 3
    raw["study"]["enqueue"] = [{"training.learning_rate": 5e-3}, {"training.learning_rate": 8e-3}]
    run_study(spec_from_dict(raw))
    best = root / "best.yaml"
    assert main(["export", "--study", "early", "--storage", f"sqlite:///{root / 'hft.db'}", "-o", str(best)]) == 0
    return root, best


def test_the_final_fit_on_a_folds_training_part_is_that_folds_best_epoch_bit_for_bit(
        early_study: tuple[Path, Path]) -> None:
    _, best = early_study
    spec = load_spec(best)
    pinned, searched = spec.fixed["training.epochs"], spec.provenance["cv_epochs"]
    assert pinned < searched == 6  # else the schedule could not matter
    cv_spec, config = search_setting(spec)
    cv = CrossValidator(cv_spec, cache=Cache(None))
    fold = spec.provenance["fold_best_epochs"].index(pinned)  # 3 folds: the median is one fold's best epoch
    scored = cv.fit_fold(fold, config)
    assert scored.score == spec.provenance["fold_scores"][fold] and scored.best_epoch == pinned < scored.epochs_run
    train = cv.tokens.subset(cv.folds[fold][0])
    final = fit_final(spec, cv.base, train, seed=cv.fold_seed(fold), device=cv.device)
    assert len(final.history) == pinned
    assert_same_weights(final.model, scored.fit.model)
    # a run laid out for the pinned epochs alone (warm-up and decay compressed) trains something else
    compressed = fine_tune(cv.base, config_of(spec), train, None, seed=cv.fold_seed(fold), device=cv.device)
    assert not same_weights(compressed.model, scored.fit.model)


def same_weights(one: torch.nn.Module, other: torch.nn.Module) -> bool:
    a, b = one.state_dict(), other.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_same_weights(one: torch.nn.Module, other: torch.nn.Module) -> None:
    a, b = one.state_dict(), other.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_an_early_stopped_export_trains_the_pinned_epochs_and_verifies_scores_that_differ(
        early_study: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    root, best = early_study
    spec = load_spec(best)
    study = optuna.load_study(study_name="early", storage=f"sqlite:///{root / 'hft.db'}")
    assert len({t.value for t in study.trials}) == 2  # the configurations score differently ...
    assert len(set(spec.provenance["fold_scores"])) > 1  # ... and so do the folds: verify can tell them apart
    assert f"median best epoch of the folds {spec.provenance['fold_best_epochs']}" in best.read_text()
    capsys.readouterr()
    assert main(["train", str(best), "-o", str(root / "model")]) == 0
    assert f"trained {spec.fixed['training.epochs']} epoch(s) on" in capsys.readouterr().out
    meta = json.loads((root / "model" / "hft_search.json").read_text())
    assert meta["training"]["epochs"] == spec.fixed["training.epochs"] and meta["training"]["schedule_epochs"] == 6
    verification = verify_spec(spec)  # at the searched 6 epochs with early stopping, not the pinned ones
    assert verification.agrees and [c.rerun for c in verification.checks] == spec.provenance["fold_scores"]


def test_verify_runs_with_the_trials_torch_thread_count(early_study: tuple[Path, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root, best = early_study
    study = optuna.load_study(study_name="early", storage=f"sqlite:///{root / 'hft.db'}")
    assert study.best_trial.user_attrs["torch_threads"] == torch.get_num_threads() == 1  # tests/conftest.py
    raw = yaml.safe_load(best.read_text())
    raw["provenance"]["torch_threads"] = 2  # as if scored by a worker with two threads
    for split in ("train", "test"):
        raw["data"][split] = str((best.parent / raw["data"][split]).resolve())
    seen, real = [], CrossValidator.fit_fold

    def fit_fold(self: CrossValidator, *args: object, **kwargs: object) -> object:
        seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CrossValidator, "fit_fold", fit_fold)
    verification = verify_spec(spec_from_dict(raw), folds=[0])
    assert seen == [2] and verification.threads == 2 and torch.get_num_threads() == 1
    assert "re-run with 2 torch thread(s), as recorded by the trial" in verification.table()


def test_a_trial_scored_before_learning_rate_scaling_exports_the_multiplier_it_used(tiny_spec_dict: dict) -> None:
    spec = spec_from_dict(tiny_spec_dict)
    study = open_study(spec)
    params = {"training.learning_rate": 1e-3, "freeze.layers": 1}
    space = {"training.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
             "freeze.layers": optuna.distributions.IntDistribution(0, 2)}
    config = HybridConfig.from_flat({**params, "freeze.enabled": True}).flat()
    for value, recorded in ((0.7, None), (0.6, 4.0)):  # the older release recorded no multiplier
        attrs = {k: v for k, v in config.items() if k != "training.max_lr_multiplier"}
        if recorded is not None:
            attrs["training.max_lr_multiplier"] = recorded
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=value,
                                                  user_attrs={"config": attrs, "fold_scores": [value] * 2}))
    assert export_spec(study, 0).fixed["training.max_lr_multiplier"] == 1.0
    assert export_spec(study, 1).fixed["training.max_lr_multiplier"] == 4.0


def test_a_changed_package_version_misses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hft_search.caching as caching

    cache = Cache(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"x": 1}  # noqa: E731
    cache.get_or_compute("importance", {"fold": 0}, compute)
    cache.get_or_compute("importance", {"fold": 0}, compute)
    assert len(calls) == 1
    upgraded = {**caching.code_versions(), "transformers": "99.0.0"}
    monkeypatch.setattr(caching, "code_versions", lambda: upgraded)
    cache.get_or_compute("importance", {"fold": 0}, compute)
    assert len(calls) == 2


def test_a_teacher_checkpoint_is_keyed_by_its_content(tmp_path: Path) -> None:
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights-1")
    first = folder_digest(folder)
    assert folder_digest(folder) == first
    (folder / "model.safetensors").write_bytes(b"weights-2")  # overwritten in place, same path
    assert folder_digest(folder) != first
