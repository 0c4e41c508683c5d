"""Baseline-anchored studies: trial 0 is the plain full fine-tune, enqueued once; lifts are paired over folds;
``study.enqueue`` and ``study.warm_start`` filter knobs; ``export`` says when the best is not better."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from scipy import stats

from hft_search import spec_from_dict
from hft_search.baseline import BASELINE_ATTR, LIFT_ATTR, Lift, baseline_config, compute_lift, midpoint
from hft_search.cli import main
from hft_search.exceptions import SpecError
from hft_search.export import export_spec
from hft_search.objective import record_lift
from hft_search.spec import FloatDist, IntDist
from hft_search.study import open_study, run_study
from hft_search.summary import describe_best, trials_table
from hft_search.workers import optimize


def spec_of(base: dict, **study: object) -> object:
    return spec_from_dict({**base, "study": {**base["study"], "baseline": True, **study}})


def waiting_params(study: optuna.Study) -> list[dict]:
    """The parameters of the enqueued (WAITING) trials, in trial order."""
    return [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]


# -- the baseline configuration and its place in the study -------------------------------------------------


def test_midpoint_is_geometric_on_log_ranges() -> None:
    assert midpoint(FloatDist.model_validate({"float": [1e-5, 1e-3], "log": True})) == pytest.approx(1e-4)
    assert midpoint(FloatDist.model_validate({"float": [0.0, 0.5]})) == pytest.approx(0.25)
    assert midpoint(IntDist.model_validate({"int": [1, 4]})) in (2, 3)


def test_baseline_is_a_plain_full_fine_tune(tiny_spec_dict: dict) -> None:
    space = {**tiny_spec_dict["search_space"], "lora.enabled": {"categorical": [True, False]},
             "lora.r": {"int": [2, 8]}}
    fixed = {**tiny_spec_dict["fixed"], "importance.enabled": True, "importance.threshold": 0.8}
    config = baseline_config(spec_from_dict({**tiny_spec_dict, "search_space": space, "fixed": fixed}))
    assert not any(getattr(config, group).enabled for group in ("freeze", "importance", "distill", "lora"))
    assert config.training.learning_rate == pytest.approx(1e-3)  # geometric middle of [1e-4, 1e-2]
    assert (config.training.epochs, config.training.batch_size) == (1, 16)  # the fixed training settings


def test_baseline_is_trial_zero_and_never_enqueued_again(tiny_spec_dict: dict) -> None:
    spec = spec_of(tiny_spec_dict)
    first = open_study(spec)
    assert [t.user_attrs.get(BASELINE_ATTR) for t in first.trials] == [True]
    assert waiting_params(first) == [{"training.learning_rate": pytest.approx(1e-3)}]
    open_study(spec)  # a resume, or a second worker joining
    assert len(open_study(spec).trials) == 1


def test_racing_workers_enqueue_one_baseline(tiny_spec_dict: dict) -> None:
    spec = spec_of(tiny_spec_dict)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def join() -> None:
        barrier.wait()
        try:
            open_study(spec)
        except BaseException as error:  # reported below, with the trials
            errors.append(error)

    threads = [threading.Thread(target=join) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = open_study(spec).trials
    assert not errors, errors
    assert [t.number for t in trials if t.user_attrs.get(BASELINE_ATTR)] == [0]
    assert len(trials) == 1


def test_baseline_runs_first_and_later_trials_record_their_lift(tiny_spec_dict: dict) -> None:
    space = {**tiny_spec_dict["search_space"], "lora.enabled": {"categorical": [True, False]}}
    spec = spec_from_dict({**tiny_spec_dict, "search_space": space,
                           "study": {**tiny_spec_dict["study"], "baseline": True, "n_trials": 3}})
    study = run_study(spec)
    baseline, *others = study.trials
    assert baseline.user_attrs[BASELINE_ATTR] and LIFT_ATTR not in baseline.user_attrs
    assert baseline.params == {"training.learning_rate": pytest.approx(1e-3), "lora.enabled": False}
    config = baseline.user_attrs["config"]
    assert not config["freeze.enabled"] and not config["lora.enabled"]
    assert baseline.user_attrs["trainable_fraction"] == 1.0
    for trial in others:
        lift = Lift.from_attr(trial.user_attrs[LIFT_ATTR])
        diffs = np.subtract(trial.user_attrs["fold_scores"], baseline.user_attrs["fold_scores"])
        assert lift.baseline_trial == 0 and lift.folds == 2
        assert lift.mean == pytest.approx(diffs.mean())
    shown = describe_best(study)
    assert "baseline: trial 0 (plain full fine-tune" in shown
    assert "baseline" in trials_table(study).splitlines()[1]


# -- the lift: paired over common folds ----------------------------------------------------------------------


def test_lift_is_scipys_paired_t_test() -> None:
    trial, base = [0.81, 0.84, 0.79, 0.86, 0.83], [0.80, 0.80, 0.78, 0.82, 0.80]
    lift = compute_lift(trial, base, baseline_trial=0)
    expected = stats.ttest_rel(trial, base)
    assert lift.p_value == pytest.approx(expected.pvalue)
    assert lift.mean == pytest.approx(np.mean(np.subtract(trial, base)))
    assert lift.std == pytest.approx(np.std(np.subtract(trial, base), ddof=1))
    assert lift.significant and lift.folds == 5


def test_lift_uses_common_folds_and_the_direction() -> None:
    pruned = compute_lift([0.5, 0.6], [0.7, 0.9, 0.8], baseline_trial=3)  # a pruned trial: its two folds
    assert pruned.folds == 2 and pruned.mean == pytest.approx(-0.25) and pruned.baseline_trial == 3
    assert pruned.p_value == pytest.approx(stats.ttest_rel([0.5, 0.6], [0.7, 0.9]).pvalue)
    lower_loss = compute_lift([0.2, 0.3], [0.4, 0.6], baseline_trial=0, maximize=False)
    assert lower_loss.mean == pytest.approx(0.25)  # positive: better than the baseline


def test_lift_without_a_test_says_so() -> None:
    one = compute_lift([0.9], [0.8], baseline_trial=0)
    assert one.p_value is None and one.std == 0 and not one.significant
    flat = compute_lift([0.6, 0.6, 0.6], [0.6, 0.6, 0.6], baseline_trial=0)
    assert flat.p_value is None and flat.mean == 0 and not flat.significant
    assert compute_lift([math.nan], [0.5], baseline_trial=0) is None
    assert "p undefined" in one.text()


# -- seeding: study.enqueue and study.warm_start ----------------------------------------------------------


def test_enqueue_is_validated_with_field_paths(tiny_spec_dict: dict) -> None:
    entries = [{"training.learning_rate": 5.0, "freeze.layerz": 1}, {"lora.r": 4}]
    with pytest.raises(SpecError) as caught:
        spec_of(tiny_spec_dict, enqueue=entries)
    message = str(caught.value)
    assert "study.enqueue.0.training.learning_rate: 5.0 is outside [0.0001, 0.01]" in message
    assert "study.enqueue.0.freeze.layerz: unknown knob" in message
    assert "study.enqueue.1.lora.r: is not searched by this spec" in message


def test_enqueued_configurations_follow_the_baseline(tiny_spec_dict: dict) -> None:
    spec = spec_of(tiny_spec_dict, enqueue=[{"freeze.layers": 2, "training.learning_rate": 5e-3}])
    study = open_study(spec)
    assert waiting_params(study)[1] == {"freeze.layers": 2, "training.learning_rate": 5e-3}
    assert study.trials[1].user_attrs["enqueued"] == "user"


def earlier_study(url: str) -> None:
    """Three completed trials: the best has an out-of-range learning rate and a knob the new space lacks."""
    study = optuna.create_study(study_name="earlier", storage=url, direction="maximize")
    space = {"training.learning_rate": FloatDistribution(1e-5, 1.0, log=True),
             "lora.r": FloatDistribution(1, 64), "freeze.layers": FloatDistribution(0, 4)}
    for value, lr, layers in ((0.9, 0.5, 1.0), (0.8, 2e-3, 2.0), (0.7, 1e-3, 0.0)):
        study.add_trial(create_trial(value=value, distributions=space,
                                     params={"training.learning_rate": lr, "lora.r": 8.0, "freeze.layers": layers}))


def test_warm_start_drops_unknown_knobs_and_skips_out_of_range_values(
        tiny_spec_dict: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'earlier.db'}"
    earlier_study(url)
    caplog.set_level(logging.INFO, logger="hft_search.seeding")
    spec = spec_of(tiny_spec_dict, warm_start={"study": "earlier", "storage": url, "top": 2})
    study = open_study(spec)
    assert waiting_params(study)[1:] == [{"freeze.layers": 1}, {"freeze.layers": 2, "training.learning_rate": 2e-3}]
    assert [t.user_attrs.get("enqueued") for t in study.trials[1:]] == ["warm_start:earlier#0",
                                                                         "warm_start:earlier#1"]
    assert "training.learning_rate = 0.5 skipped (0.5 is outside [0.0001, 0.01])" in caplog.text
    assert "lora.r is not searched by this spec; dropped" in caplog.text


def test_warm_start_from_a_missing_study_leaves_no_study(tiny_spec_dict: dict, tmp_path: Path) -> None:
    spec = spec_of(tiny_spec_dict, warm_start={"study": "nope", "storage": f"sqlite:///{tmp_path / 'e.db'}"})
    with pytest.raises(Exception, match=r"study\.warm_start\.storage: no study storage at .*e\.db"):
        open_study(spec)
    assert optuna.get_all_study_names(storage=spec.study.storage) == []
    assert not (tmp_path / "e.db").exists()  # the missing warm-start storage is not created either


# -- export says when the best is not better ----------------------------------------------------------------


def study_with_scores(tiny_spec_dict: dict, baseline_folds: list[float], other_folds: list[float],
                      **study: object) -> optuna.Study:
    """A stored study whose baseline and one other trial have the given fold scores (no fine-tune needed)."""
    spec = spec_of(tiny_spec_dict, n_trials=2, **study)
    study = open_study(spec)

    def fake(trial: optuna.Trial) -> float:
        scores = baseline_folds if trial.number == 0 else other_folds
        trial.suggest_float("training.learning_rate", 1e-4, 1e-2, log=True)
        trial.set_user_attr("fold_scores", scores)
        trial.set_user_attr("config", {"training.learning_rate": trial.params["training.learning_rate"]})
        trial.set_user_attr("metric", "accuracy")
        record_lift(trial, scores)
        return float(np.mean(scores))

    optimize(study, fake, 2)
    return study


def test_export_says_when_the_best_is_not_significantly_better(tiny_spec_dict: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    study = study_with_scores(tiny_spec_dict, [0.80, 0.78], [0.79, 0.81])  # +0.01 mean, noisy
    spec = export_spec(study)
    assert spec.provenance["trial"] == 1 and spec.provenance["baseline"]["trial"] == 0
    assert spec.provenance["lift"]["mean"] == pytest.approx(0.01)
    assert "is not significantly better than the baseline" in spec.provenance["lift_warning"]
    code = main(["export", "--study", study.study_name, "--storage", tiny_spec_dict["study"]["storage"],
                 "-o", str(tmp_path / "best.yaml")])
    out = capsys.readouterr().out
    assert code == 0 and "lift over the baseline (trial 0): +0.0100" in out and "warning: trial 1 is not" in out


def test_export_of_a_study_whose_best_is_the_baseline(tiny_spec_dict: dict) -> None:
    study = study_with_scores(tiny_spec_dict, [0.80, 0.82], [0.60, 0.62])
    spec = export_spec(study)
    assert spec.provenance["trial"] == 0 and spec.provenance["lift"] is None
    assert spec.provenance["lift_warning"].startswith("the best trial is the baseline (trial 0")


def test_no_warning_when_the_lift_is_significant(tiny_spec_dict: dict) -> None:
    study = study_with_scores(tiny_spec_dict, [0.70, 0.72], [0.80, 0.83],
                              enqueue=[{"training.learning_rate": 2e-3}])
    spec = export_spec(study)  # the study's enqueue does not travel into the one-configuration spec
    assert spec.provenance["lift_warning"] is None and spec.study.enqueue == []
    assert spec.fixed["training.learning_rate"] == 2e-3


def test_report_shows_the_baseline_and_the_lift(tiny_spec_dict: dict) -> None:
    from hft_search.reports import figures

    study = study_with_scores(tiny_spec_dict, [0.80, 0.78], [0.79, 0.81])
    card = figures.best_configuration(study).data[0].cells.values
    rows = dict(zip(card[0], card[1], strict=True))
    assert rows["baseline"].startswith("trial #0") and rows["lift over baseline"].startswith("+0.0100 ± ")
    assert "is not significantly better than the baseline" in rows["warning"]
    lift_column = figures.trials_table(study).data[0].cells.values[3]
    assert lift_column[0] == "baseline" and lift_column[1].startswith("+0.0100 (p ")
