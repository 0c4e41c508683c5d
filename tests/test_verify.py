"""The exported configuration reproduces what the search scored: teacher knobs, epochs, verify, cache keys.

Tiny random BERT on the CPU: there the fine-tunes are deterministic, so ``verify`` must find bit-identical
fold scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from hft_search import load_spec, run_study, spec_from_dict
from hft_search.caching import Cache, folder_digest
from hft_search.cli import main
from hft_search.cv import CrossValidator
from hft_search.export import train_final, verify_spec
from hft_search.export._train import search_setting


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


def test_trains_teacher_equals_the_trials_teacher(kd_study: tuple[Path, Path]) -> None:
    root, best = kd_study
    study = optuna.load_study(study_name="kd", storage=f"sqlite:///{root / 'hft.db'}")
    recorded = study.best_trial.user_attrs["teacher_scores"]
    cv_spec, config = search_setting(load_spec(best))
    fold0 = CrossValidator(cv_spec, cache=Cache(None)).fit_fold(0, config)  # train's fold runs, uncached
    assert fold0.teacher_score == recorded[0]
    trained = train_final(load_spec(best), root / "model")
    teacher = trained.metadata["teacher"]
    assert {k: teacher[k] for k in ("learning_rate", "epochs", "batch_size")} == \
        {k: study.best_trial.user_attrs["teacher"][k] for k in ("learning_rate", "epochs", "batch_size")}


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
    raw["provenance"]["fold_scores"][0] += 0.01
    raw["data"]["train"] = str((best.parent / raw["data"]["train"]).resolve())
    raw["data"]["test"] = str((best.parent / raw["data"]["test"]).resolve())
    tampered = tmp_path / "tampered.yaml"
    tampered.write_text(yaml.safe_dump(raw))
    assert main(["verify", str(tampered), "--folds", "0"]) == 1
    assert "DIFFERS" in capsys.readouterr().out
    assert main(["verify", str(tampered), "--folds", "5"]) == 2
    assert "fold(s) 5 were not recorded" in capsys.readouterr().err


def test_folds_that_stop_improving_after_epoch_1_export_a_1_epoch_final_fit(
        tmp_path: Path, tiny_model_dir: Path, tiny_csv: Path, tiny_test_csv: Path,
        capsys: pytest.CaptureFixture) -> None:
    # A learning rate far too small to move a prediction: every epoch scores the same, so each fold's best
    # (first) epoch is 1, and early stopping (patience 2) ends the folds after epoch 3.
    raw = _raw(tmp_path, tiny_model_dir, tiny_csv, tiny_test_csv, name="flat",
               space={"freeze.layers": {"int": [0, 1]}},
               fixed={"training.epochs": 3, "training.learning_rate": 1e-9, "training.patience": 2})
    run_study(spec_from_dict(raw))
    best = tmp_path / "best.yaml"
    assert main(["export", "--study", "flat", "--storage", f"sqlite:///{tmp_path / 'hft.db'}", "-o", str(best)]) == 0
    spec = load_spec(best)
    assert spec.fixed["training.epochs"] == 1 and spec.provenance["cv_epochs"] == 3
    assert spec.provenance["fold_best_epochs"] == [1, 1]
    assert "median best epoch of the folds [1, 1]" in best.read_text()  # said in the file, as a comment too
    capsys.readouterr()
    assert main(["train", str(best), "-o", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out
    assert "trained 1 epoch(s) on" in out and "median best epoch" in out
    meta = json.loads((tmp_path / "model" / "hft_search.json").read_text())
    assert meta["training"]["epochs"] == 1
    assert verify_spec(spec).agrees  # verify cross-validates at the searched 3 epochs, not the pinned 1


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
