"""Spec validation: a valid spec resolves; every kind of mistake is reported with its field path, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hft_search.exceptions import SpecError
from hft_search.spec import (
    GROUPS,
    SWITCHABLE_GROUPS,
    HybridConfig,
    check_against_layers,
    knob_names,
    load_spec,
    spec_from_dict,
)

VALID = {
    "name": "demo",
    "data": {"train": "data/train.csv"},
    "search_space": {
        "training.learning_rate": {"float": [1e-5, 1e-3], "log": True},
        "freeze.layers": {"int": [0, 4]},
        "lora.enabled": {"categorical": [True, False]},
        "lora.r": {"int": [4, 16], "log": True},
    },
    "fixed": {"training.epochs": 2, "distill.alpha": 0.3},
}


def issues(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as caught:
        spec_from_dict(raw, base_dir="/base")
    return [str(issue) for issue in caught.value.issues]


def test_valid_spec_resolves_paths_and_groups() -> None:
    spec = spec_from_dict(VALID, base_dir="/base")
    assert spec.data.train == "/base/data/train.csv"
    assert spec.enabled_groups() == {"freeze": True, "importance": False, "distill": True, "lora": None}
    assert spec.cv.folds == 3 and spec.study.sampler == "tpe"


def test_yaml_round_trip(tmp_path: Path) -> None:
    spec = spec_from_dict(VALID, base_dir=tmp_path)
    path = tmp_path / "again.yaml"
    path.write_text(spec.to_yaml())
    assert load_spec(path) == spec


def test_three_mistakes_reported_together_with_paths() -> None:
    raw = {**VALID, "search_space": {"training.learning_rate": {"float": [1e-3, 1e-5]},
                                     "foo.bar": {"int": [0, 1]}},
           "cv": {"folds": 1}}
    found = issues(raw)
    assert "search_space.training.learning_rate: low must be below high" in found
    assert any(line.startswith("search_space.foo.bar: unknown knob; valid knobs are:") for line in found)
    assert any(line.startswith("cv.folds:") for line in found)
    assert len(found) == 3


@pytest.mark.parametrize(
    ("section", "knob", "value", "path"),
    [
        ("fixed", "distill.temperature", -1.0, "fixed.distill.temperature"),
        ("fixed", "distill.student_layers", 0, "fixed.distill.student_layers"),
        ("search_space", "importance.threshold", {"float": [0.0, 1.0]}, "search_space.importance.threshold"),
        ("search_space", "training.learning_rate", {"float": [0.0, 1e-3], "log": True},
         "search_space.training.learning_rate"),
        ("search_space", "importance.score", {"categorical": ["grad_norm", "nope"]}, "search_space.importance.score"),
        ("search_space", "freeze.layers", {"int": [0, 4], "step": 0}, "search_space.freeze.layers.step"),
        ("search_space", "lora.r", [4, 8], "search_space.lora.r"),
    ],
)
def test_bad_knob_values_name_their_path(section: str, knob: str, value: object, path: str) -> None:
    raw = {**VALID, section: {**VALID[section], knob: value}}
    assert any(line.startswith(path + ":") for line in issues(raw)), issues(raw)


def test_knob_both_searched_and_fixed() -> None:
    raw = {**VALID, "fixed": {"freeze.layers": 2}}
    assert issues(raw) == ["fixed.freeze.layers: is both searched and fixed; keep one"]


def test_data_needs_exactly_one_source() -> None:
    assert any(line.startswith("data:") for line in issues({**VALID, "data": {}}))
    assert any("unknown field" in line for line in issues({**VALID, "data": {"train": "x.csv", "colum": "t"}}))


def test_layers_checked_against_model() -> None:
    spec = spec_from_dict({**VALID, "search_space": {"freeze.layers": {"int": [0, 8]}}})
    with pytest.raises(SpecError, match="search_space.freeze.layers: 8 exceeds the model's 6 blocks"):
        check_against_layers(spec, 6)
    check_against_layers(spec, 12)


def test_overlapping_reinit_and_freeze_refused_unless_exported() -> None:
    # Written by a user, 6 frozen + 1 re-initialised blocks of a 6-block model contradict each other; exported
    # from a trial that sampled them, they are what was scored (no block re-initialised) and must fit as they are.
    raw = {**VALID, "search_space": {}, "fixed": {"freeze.layers": 6, "training.reinit_layers": 1}}
    with pytest.raises(SpecError, match="fixed.training.reinit_layers: 1 re-initialised \\+ 6 frozen blocks"):
        check_against_layers(spec_from_dict(raw), 6)
    check_against_layers(spec_from_dict({**raw, "provenance": {"study": "s", "trial": 3}}), 6)


def test_nsga2_needs_multi_objective_and_grid_needs_discrete() -> None:
    assert any(line.startswith("study.sampler: nsga2") for line in issues({**VALID, "study": {"sampler": "nsga2"}}))
    assert any("grid needs" in line for line in issues({**VALID, "study": {"sampler": "grid"}}))


def test_missing_and_broken_spec_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(broken)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError):
        load_spec(unsafe)


def test_hybrid_config_flat_round_trip() -> None:
    config = HybridConfig.from_flat({"freeze.layers": 2, "distill.enabled": True, "lora.targets": ["query"]})
    assert HybridConfig.from_flat(config.flat()) == config
    assert set(config.flat()) == set(knob_names())


def test_groups_registry_is_what_the_spec_reads() -> None:
    """A knob group is registered once, in GROUPS: the configuration's fields, the switchable groups and the
    valid knob names all follow it, in its order."""
    assert list(HybridConfig.model_fields) == list(GROUPS)
    assert SWITCHABLE_GROUPS == tuple(group for group, model in GROUPS.items() if "enabled" in model.model_fields)
    assert knob_names() == [f"{group}.{knob}" for group, model in GROUPS.items() for knob in model.model_fields]


def test_relative_sqlite_storage_resolves_against_spec(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**VALID, "study": {"storage": "sqlite:///x.db"}}))
    assert load_spec(path).study.storage == f"sqlite:///{tmp_path / 'x.db'}"
