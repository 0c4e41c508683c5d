"""The benchmark suite runs end to end and writes results of the documented shape.

Speed is measured by the benchmarks, never asserted here: the suite runs at its ``smoke`` sizes on the tiny
model, into a temporary results folder (never over the committed results), and only the JSON's keys and
types and the README table are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE_MODULES = ("memory", "trial_overhead", "caching", "scaling", "search_quality", "threads", "connections",
                 "decoder", "distill_ablation", "setfit_arm", "study_vs_handwritten")
"""Benchmarks whose JSON the runner writes (``engine`` and ``storage`` write their own)."""
MACHINE_KEYS = {"cpu_count": int, "torch_threads": int, "torch": str, "transformers": str, "optuna": str,
                "peft": str, "device": str, "device_name": str}


def check_target(target: dict) -> None:
    assert isinstance(target["name"], str) and target["name"]
    assert target["value"] is None or isinstance(target["value"], int | float)
    assert isinstance(target["target"], int | float)
    assert target["comparison"] in ("<=", ">=")
    assert isinstance(target["met"], bool)
    assert isinstance(target["detail"], str)


def check_entry(name: str, entry: dict) -> None:
    assert entry["benchmark"] == name and entry["preset"] == "smoke"
    for key, kind in MACHINE_KEYS.items():
        assert isinstance(entry["machine"][key], kind), (name, key)
    assert isinstance(entry["sizes"], dict) and entry["sizes"]
    assert isinstance(entry["duration_s"], float) and entry["duration_s"] > 0
    assert isinstance(entry["data"]["train"], str) and isinstance(entry["data"]["dev"], str)
    assert isinstance(entry["targets"], list)
    if name in ("scaling", "connections") and "skipped" in entry:  # no PostgreSQL: the reason is recorded instead
        assert not os.environ.get("HFT_TEST_POSTGRES_URL"), f"{name} skipped: {entry['skipped']}"
        assert isinstance(entry["skipped"], str)
        return
    assert entry["targets"], name
    for target in entry["targets"]:
        check_target(target)


@pytest.mark.slow
def test_suite_runs_and_writes_results_of_the_documented_shape(tiny_model_dir: Path, tiny_csv: Path,
                                                                tiny_test_csv: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks", "--sizes", "smoke", "--model", str(tiny_model_dir),
               "--train", str(tiny_csv), "--dev", str(tiny_test_csv), "--results-dir", str(results),
               "--threads", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    for name in SUITE_MODULES:
        check_entry(name, json.loads((results / f"{name}.json").read_text())["smoke"])
    overhead = json.loads((results / "trial_overhead.json").read_text())["smoke"]
    assert overhead["gpu"] == {"skipped": "no CUDA device"} or overhead["gpu"]["targets"]
    assert set(overhead["cpu"]["trial_seconds"]) == {"hft_search", "bare", "trainer"}
    decoder = json.loads((results / "decoder.json").read_text())["smoke"]
    assert decoder["gpu"] == {"skipped": "no CUDA"} or decoder["gpu"]["targets"]
    assert {row["model"] for row in decoder["cpu"]["rows"]} == {"qwen2", "bert"}
    assert all(row["trials_per_hour"] > 0 and row["peak_memory_mb"] > 0 for row in decoder["cpu"]["rows"])

    study = json.loads((results / "study_vs_handwritten.json").read_text())["smoke"]
    for run in (study["enqueued"]["h"], study["enqueued"]["s"]):
        assert len(run["trials"]) == len(study["configurations"]) and run["wall_s"] > 0 and run["fold_epochs"] > 0
    assert study["agreement"]["compared"] + study["agreement"]["skipped"] == len(study["configurations"])
    assert study["breakdown"]["h"]["teacher_fits"] > study["breakdown"]["s"]["teacher_fits"] > 0
    assert all(len(study["sampled"][side]["curve"]) == study["sizes"]["sampled_trials"] for side in "hs")
    assert (results / study["figure"]).is_file()

    engine = json.loads((results / "engine.json").read_text())
    quick = [entry for key, entry in engine.items() if key.endswith(":quick")]
    assert quick and all(entry["targets"] for entry in quick)
    for target in quick[0]["targets"]:
        check_target(target)
    storage = json.loads((results / "storage.json").read_text())
    assert isinstance(storage["quick"]["worst_percent"], float)

    table = (results / "README_table.md").read_text()
    assert "| benchmark | figure | measured | target | met |" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]
    skipped = {name for name in ("scaling", "connections")
               if "skipped" in json.loads((results / f"{name}.json").read_text())["smoke"]}
    assert {row.split(" | ")[0].removeprefix("| ") for row in rows} >= {*SUITE_MODULES, "engine", "storage"} - skipped


def points(*pairs: tuple[float, float]) -> list[dict]:
    """An anytime curve from (elapsed seconds, best so far) pairs."""
    return [{"elapsed_s": seconds, "best_so_far": best} for seconds, best in pairs]


def test_time_to_reach_another_searchs_final_best_is_a_share_of_its_wall_time() -> None:
    from benchmarks import _anytime as anytime

    theirs = points((10.0, 0.70), (40.0, 0.80))
    assert anytime.share_to_reach(points((5.0, 0.75), (10.0, 0.81)), theirs) == 0.25
    assert anytime.share_to_reach(points((5.0, 0.75), (60.0, 0.79)), theirs) is None  # never reached
    assert anytime.median([0.2, None, 0.4]) == 0.4  # a miss counts as worse than any share
    assert anytime.median([None, None, 0.1]) is None
    assert anytime.median([0.1, 0.3]) == 0.2


# -- study_vs_handwritten: both sides read the same configuration, and the comparison is sound ----------------


@pytest.mark.parametrize("num_layers", [6, 4])
def test_both_sides_read_every_enqueued_configuration_alike(num_layers: int, tmp_path: Path) -> None:
    """The spec accepts the enqueued configurations, and hft_search's trial sampling and the hand-written
    objective turn each into the same knob values (else the two sides would not run the same study)."""
    import optuna

    from benchmarks import study_vs_handwritten as bench
    from benchmarks._handwritten import suggest
    from hft_search.objective import suggest_config

    configs = bench.configurations(num_layers)
    space = bench.space_for(num_layers)
    spec = bench.service_spec("t", tmp_path, rows_file=tmp_path / "rows.tsv", model="minilm",
                              sizes=bench.SIZES["smoke"], space=space, enqueue=configs, n_trials=len(configs),
                              study_options={"baseline": False}, model_options={})
    assert len(configs) >= 10 and len({bench.canonical(c) for c in configs}) == len(configs)
    study = optuna.create_study()
    for config in configs:
        study.enqueue_trial(config)
        study.enqueue_trial(config)
        ours, theirs = suggest_config(study.ask(), spec), suggest(study.ask(), space)
        assert theirs.learning_rate == ours.training.learning_rate
        assert theirs.freeze_layers == (ours.freeze.layers if ours.freeze.enabled else None)
        assert theirs.importance_threshold == (ours.importance.threshold if ours.importance.enabled else None)
        distill = ours.distill
        assert theirs.distill == ((distill.alpha, distill.temperature, distill.student_layers)
                                  if distill.enabled else None)
        assert theirs.lora_r == (ours.lora.r if ours.lora.enabled else None)


def test_hand_written_settings_are_hft_search_defaults() -> None:
    """Every training setting (h) fixes by hand is the default (s) runs with: a changed default fails here."""
    from benchmarks._handwritten import Settings
    from hft_search.spec import knob_default, knob_names

    settings = Settings(model_dir="", rows_file="", output_dir="", space={}, folds=2, max_length=8, epochs=1,
                        batch_size=2)
    knobs = {"weight_decay": "training.weight_decay", "warmup_ratio": "training.warmup_ratio",
             "max_grad_norm": "training.max_grad_norm", "max_lr_multiplier": "training.max_lr_multiplier",
             "distill_beta": "distill.beta", "teacher_learning_rate": "distill.teacher_learning_rate",
             "teacher_epochs": "distill.teacher_epochs", "teacher_batch_size": "distill.teacher_batch_size",
             "importance_batches": "importance.batches", "lora_alpha": "lora.alpha"}
    assert {field: getattr(settings, field) for field in knobs} == {f: knob_default(k) for f, k in knobs.items()}
    assert (knob_default("importance.score"), knob_default("importance.granularity")) == ("grad_norm", "tensor")
    assert (knob_default("lora.dropout"), knob_default("lora.targets"), knob_default("training.dropout")) == (
        0.0, None, None)
    off = {"distill.hidden_weight": 0.0, "distill.student_init": "bottom", "lora.variant": "lora",
           "lora.lr_ratio": 1.0, "training.layer_lr_decay": 1.0, "training.reinit_layers": 0}
    present = set(knob_names())  # knobs of issue 20: (h) has none of them, so (s) must default to their "off"
    assert {k: knob_default(k) for k in off if k in present} == {k: v for k, v in off.items() if k in present}


def test_extras_are_switched_off_with_values_the_installed_spec_accepts() -> None:
    from benchmarks._common import EXTRAS
    from benchmarks.study_vs_handwritten import switched_off
    from hft_search.spec import ModelSpec, StudyOptions

    study, model, notes = switched_off()
    assert study.get("baseline") is False  # exists today
    assert all(value in (False, "none") for value in study.values())
    StudyOptions.model_validate(study)
    ModelSpec.model_validate(model)
    assert len(notes) >= len(EXTRAS) and all(any(f"study.{field}" in note for note in notes) for field in EXTRAS)


def test_a_benchmark_spec_written_as_yaml_loads_back_unchanged(tmp_path: Path) -> None:
    """What the CLI workers and (s) load is the spec the benchmark built: extras switched off stay off."""
    from benchmarks import study_vs_handwritten as bench
    from benchmarks._common import spec_yaml
    from hft_search.spec import load_spec

    study, model, _ = bench.switched_off()
    configs = bench.configurations(6)
    spec = bench.service_spec("t", tmp_path, rows_file=tmp_path / "rows.tsv", model="minilm",
                              sizes=bench.SIZES["full"], space=bench.space_for(6), enqueue=configs,
                              n_trials=len(configs), study_options=study, model_options=model)
    (tmp_path / "spec.yaml").write_text(spec_yaml(spec), encoding="utf-8")
    assert load_spec(tmp_path / "spec.yaml") == spec


def trial(params: dict, scores: list[float], state: str = "COMPLETE", first: float | None = None) -> dict:
    return {"params": params, "fold_scores": scores, "state": state, "first_fold_epoch": first}


def test_configurations_are_compared_over_the_folds_both_sides_finished() -> None:
    from benchmarks.study_vs_handwritten import compare_sides

    configs = [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}]
    first = [trial({"a": 1}, [0.8, 0.7, 0.9], first=0.5), trial({"a": 2}, [0.6], "PRUNED", 0.6),
             trial({"a": 3}, [0.5, 0.5], first=0.5), trial({"a": 4}, [], "PRUNED", 0.5)]
    second = [trial({"a": 4}, [0.9], first=0.75), trial({"a": 3}, [0.6, 0.7]), trial({"a": 2}, [0.7, 0.8, 0.9]),
              trial({"a": 1}, [0.8, 0.8, 0.9], first=0.5)]
    result = compare_sides(first, second, configs)
    rows = result["per_config"]
    assert [row["folds"] for row in rows] == [3, 1, 2, 0]
    assert rows[1]["first"] == 0.6 and rows[1]["second"] == 0.7 and rows[1]["states"] == ["PRUNED", "COMPLETE"]
    assert rows[2]["diff"] == pytest.approx(0.15) and "diff" not in rows[3]
    assert (result["compared"], result["skipped"], result["second_higher"]) == (3, 1, 3)
    assert result["mean_diff"] == pytest.approx((0.1 / 3 + 0.1 + 0.15) / 3)
    assert 0 < result["p_value"] < 1
    assert result["first_fold_epoch"] == {"compared": 2, "mean_diff": 0.125, "mean_abs_diff": 0.125,
                                          "max_abs_diff": 0.25, "second_higher": 1, "t_statistic": 1.0,
                                          "p_value": pytest.approx(0.5)}
    with pytest.raises(RuntimeError, match="one side only"):
        compare_sides(first[:3], second, configs)


def test_first_fold_epoch_is_read_from_each_sides_record() -> None:
    """(h) keeps every epoch's score per fold; (s) reports fold 0's first epoch as step 1 of its pruning."""
    import optuna

    from benchmarks.study_vs_handwritten import first_fold_epoch

    def frozen(**kwargs: object) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(value=0.5, **kwargs)

    assert first_fold_epoch(frozen(user_attrs={"epoch_scores": [[0.61, 0.7], [0.8]]})) == 0.61
    assert first_fold_epoch(frozen(user_attrs={"epoch_scores": []})) is None
    assert first_fold_epoch(frozen(intermediate_values={1: 0.64, 2: 0.7})) == 0.64
    assert first_fold_epoch(frozen(intermediate_values={0: 0.64})) is None


def test_a_resumed_threads_run_reuses_only_the_rows_measured_at_its_sizes(tmp_path: Path) -> None:
    """``threads`` keeps each configuration's row as it finishes; a run resumed in the same work folder measures
    only the rest, and rows measured at other sizes are never mixed in."""
    from benchmarks.threads import SIZES, finished_rows, keep_rows

    assert finished_rows(tmp_path, SIZES["full"]) == {}
    rows = {"1 worker": {"threads_per_worker": 2, "counted": 8, "span_s": 360.0, "wall_s": 372.0,
                         "trials_per_hour": 80.0, "trials_per_hour_with_startup": 77.4}}
    keep_rows(tmp_path, SIZES["full"], rows)
    assert finished_rows(tmp_path, SIZES["full"]) == rows
    assert finished_rows(tmp_path, SIZES["quick"]) == {}


def test_threads_targets_of_configurations_not_measured_are_not_met() -> None:
    """A threads run stopped before its last configurations still reports the rest, and names what is missing
    instead of leaving it out of the table."""
    from benchmarks.threads import SIZES, summarize

    def row(per_hour: float, threads: int) -> dict:
        return {"threads_per_worker": threads, "counted": 8, "span_s": 3600 * 8 / per_hour, "wall_s": 400.0,
                "trials_per_hour": per_hour, "trials_per_hour_with_startup": per_hour * 0.9}

    rows = {"1 worker": row(80.0, 2), "2 workers, no split": row(18.0, 2), "2 workers, --threads": row(78.0, 1),
            "launch --workers 2": row(84.0, 1)}
    result = summarize(rows, SIZES["full"], 2, [])
    assert result["not_measured"] == ["4 workers, --threads", "4 workers, no split"]
    by_name = {t["name"]: t for t in result["targets"]}
    assert by_name["trials/h, launch --workers 2 / 1 worker"]["met"]
    assert not by_name["trials/h, 2 workers, --threads / 1 worker"]["met"]  # 78 / 80
    missing = by_name["trials/h, 4 workers, --threads / 4 workers, no split"]
    assert missing["value"] is None and not missing["met"] and "not measured" in missing["detail"]


def test_a_study_span_runs_from_the_first_start_to_the_last_completion() -> None:
    """Trials that ran side by side count once; a trial still running is outside the span."""
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from benchmarks._common import span_s

    t0 = datetime(2026, 12, 5, 18, 0, 0)

    def trial(start: int, end: int | None) -> SimpleNamespace:
        return SimpleNamespace(datetime_start=t0 + timedelta(seconds=start),
                               datetime_complete=None if end is None else t0 + timedelta(seconds=end))

    assert span_s([trial(10, 40), trial(0, 30), trial(5, None)]) == 40.0
    with pytest.raises(ValueError, match="no finished trial"):
        span_s([trial(0, None)])


def test_a_pipe_in_a_figure_name_does_not_split_its_table_row(tmp_path: Path) -> None:
    from benchmarks.__main__ import render_table

    target = {"name": "systematic offset |mean (s) - (h)|", "value": 0.01, "target": 0.02, "comparison": "<=",
              "met": True, "detail": "mean |(s) - (h)| 0.017"}
    (tmp_path / "study_vs_handwritten.json").write_text(json.dumps({"full": {"targets": [target]}}))
    row = next(line for line in render_table(tmp_path, "full").splitlines() if line.startswith("| study_vs"))
    assert row.replace("\\|", "").count("|") == 6  # five cells
