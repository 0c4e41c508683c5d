"""The tuned baseline: a learning-rate sweep of the plain full fine-tune, enqueued once, outside ``n_trials``,
writing every searched knob; lifts computed on read against its best trial; ``study.enqueue`` and
``study.warm_start`` filter knobs; ``export`` says when the best is not better; a study made before all this
still reads and resumes."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hft_search import spec_from_dict
from hft_search.baseline import (
    BASELINE_ATTR,
    LIFT_ATTR,
    OFF_VALUES,
    baseline_config,
    baseline_params,
    lift_of,
    midpoint,
    reference_baseline,
    sweep_values,
)
from hft_search.cli import main
from hft_search.exceptions import SpecError
from hft_search.export import export_spec
from hft_search.objective import suggest_config
from hft_search.spec import CategoricalDist, FloatDist, IntDist
from hft_search.storage import make_storage
from hft_search.study import open_study, run_study
from hft_search.summary import best_summary, describe_best, trials_table
from hft_search.workers import counted_trials, optimize


def spec_of(base: dict, **study: object) -> object:
    return spec_from_dict({**base, "study": {**base["study"], "baseline": True, **study}})


def waiting_params(study: optuna.Study) -> list[dict]:
    """The parameters of the enqueued (WAITING) trials, in trial order."""
    return [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]


# -- the sweep and the knobs a baseline trial writes ---------------------------------------------------------


def test_sweep_points_are_centres_of_equal_parts_on_the_range_scale() -> None:
    log = FloatDist.model_validate({"float": [1e-5, 1e-3], "log": True})
    assert sweep_values(log, 1) == [pytest.approx(1e-4)] and midpoint(log) == pytest.approx(1e-4)
    assert sweep_values(log, 2) == [pytest.approx(10 ** -4.5), pytest.approx(10 ** -3.5)]
    assert sweep_values(log, 3) == [pytest.approx(10 ** (-5 + 2 * (i + 0.5) / 3)) for i in range(3)]
    linear = FloatDist.model_validate({"float": [0.0, 0.6]})
    assert sweep_values(linear, 3) == [pytest.approx(v) for v in (0.1, 0.3, 0.5)]
    stepped = FloatDist.model_validate({"float": [0.0, 1.0], "step": 0.5})
    assert sweep_values(stepped, 4) == [0.0, 0.5, 1.0]  # snapped to the step, repeats dropped
    assert sweep_values(IntDist.model_validate({"int": [1, 4]}), 1) == [3]  # 1 + round(1.5)
    assert sweep_values(CategoricalDist.model_validate({"categorical": [1e-5, 3e-5, 1e-4, 3e-4]}), 2) == [3e-5, 3e-4]


def hybrid_space(base: dict) -> dict:
    """Learning rate, a forced-on freeze group, a searched LoRA switch, an importance group forced on."""
    return {**base, "search_space": {
        "training.learning_rate": {"float": [2e-5, 3e-4], "log": True},
        "training.warmup_ratio": {"float": [0.0, 0.2]},
        "freeze.layers": {"int": [0, 2]},
        "importance.threshold": {"float": [0.5, 0.9]},
        "importance.score": {"categorical": ["grad_norm", "fisher"]},
        "lora.enabled": {"categorical": [True, False]},
        "lora.r": {"int": [2, 8]},
    }}


def test_every_baseline_trial_writes_every_knob_a_sampled_trial_of_its_shape_has(tiny_spec_dict: dict) -> None:
    spec = spec_of(hybrid_space(tiny_spec_dict))
    sweep = baseline_params(spec)
    assert [p["training.learning_rate"] for p in sweep] == sweep_values(spec.search_space["training.learning_rate"], 3)
    first = sweep[0]
    # forced-on groups at their off value (clamped into the range), the LoRA switch off and its knob absent
    assert first["freeze.layers"] == OFF_VALUES["freeze.layers"] == 0
    assert first["importance.threshold"] == 0.5  # the off value 0 clamped to the range's bottom
    assert first["importance.score"] == "fisher" and first["training.warmup_ratio"] == pytest.approx(0.1)
    assert first["lora.enabled"] is False and "lora.r" not in first
    # the same knobs as a sampled trial with LoRA off: TPE's group decomposition sees one shape
    study = optuna.create_study()
    study.enqueue_trial({"lora.enabled": False})
    trial = study.ask()
    suggest_config(trial, spec)
    assert set(first) == set(trial.params)


def test_baseline_runs_the_plain_full_fine_tune_at_its_rate(tiny_spec_dict: dict) -> None:
    spec = spec_of(hybrid_space(tiny_spec_dict))
    params = baseline_params(spec)[2]
    config = baseline_config(spec, params)
    assert not any(getattr(config, group).enabled for group in ("freeze", "importance", "distill", "lora"))
    assert config.training.learning_rate == params["training.learning_rate"]
    assert config.training.warmup_ratio == pytest.approx(0.1)
    assert (config.training.epochs, config.training.batch_size) == (1, 16)  # the fixed training settings
    assert baseline_config(spec).training.learning_rate == pytest.approx(midpoint(
        spec.search_space["training.learning_rate"]))


def test_without_a_searched_rate_the_baseline_is_one_trial(tiny_spec_dict: dict) -> None:
    spec = spec_of({**tiny_spec_dict, "search_space": {"freeze.layers": {"int": [1, 2]}}}, baseline={"trials": 5})
    assert baseline_params(spec) == [{"freeze.layers": 1}]


def test_old_and_new_baseline_settings_validate(tiny_spec_dict: dict) -> None:
    assert spec_of(tiny_spec_dict).study.baseline.trials == 3  # an old spec's `baseline: true`
    assert spec_of(tiny_spec_dict, baseline={"trials": 2}).study.baseline.trials == 2
    assert spec_of(tiny_spec_dict, baseline=False).study.baseline is False
    with pytest.raises(SpecError, match="study.baseline.trials: Input should be greater than or equal to 1"):
        spec_of(tiny_spec_dict, baseline={"trials": 0})
    with pytest.raises(SpecError, match="study.baseline: must be true, false or a mapping"):
        spec_of(tiny_spec_dict, baseline="yes")


# -- its place in the study ---------------------------------------------------------------------------------


def test_sweep_is_enqueued_first_and_never_again(tiny_spec_dict: dict) -> None:
    spec = spec_of(tiny_spec_dict)
    first = open_study(spec)
    assert [t.user_attrs.get(BASELINE_ATTR) for t in first.trials] == [True] * 3
    rates = sweep_values(spec.search_space["training.learning_rate"], 3)
    assert waiting_params(first) == [{"training.learning_rate": pytest.approx(r), "freeze.layers": 0} for r in rates]
    open_study(spec)  # a resume, or a second worker joining
    assert len(open_study(spec).trials) == 3


def test_racing_workers_enqueue_one_sweep(tiny_spec_dict: dict) -> None:
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
    assert [t.number for t in trials if t.user_attrs.get(BASELINE_ATTR)] == [0, 1, 2] and len(trials) == 3


def test_n_trials_counts_the_searched_trials_only(tiny_spec_dict: dict) -> None:
    """A spec with ``n_trials: 1`` and pinned hybrid knobs runs the sweep and the user's configuration."""
    raw = {**tiny_spec_dict, "search_space": {"training.learning_rate": {"float": [1e-4, 1e-2], "log": True}},
           "fixed": {**tiny_spec_dict["fixed"], "freeze.layers": 2}}
    study = run_study(spec_of(raw, n_trials=1, baseline={"trials": 2}))
    states = [(t.user_attrs.get(BASELINE_ATTR, False), t.state) for t in study.trials]
    assert states == [(True, TrialState.COMPLETE)] * 2 + [(False, TrialState.COMPLETE)]
    assert counted_trials(study) == 1
    assert study.trials[2].user_attrs["config"]["freeze.layers"] == 2  # the user's configuration ran
    assert study.trials[0].user_attrs["config"]["freeze.enabled"] is False
    summary = describe_best(study)
    assert "1 counted trials (1 complete) + 2 baseline trial(s) outside n_trials" in summary
    assert "tuned baseline: trial" in summary and "(the best of 2 swept: " in summary


# -- lifts: computed on read, against the best completed baseline ---------------------------------------------


def fake_objective(scores: dict[int, list[float]]) -> object:
    """An objective that records the given fold scores per trial number (no fine-tune needed)."""

    def run(trial: optuna.Trial) -> float:
        folds = scores[trial.number]
        trial.suggest_float("training.learning_rate", 1e-4, 1e-2, log=True)
        if trial.user_attrs.get(BASELINE_ATTR):
            trial.suggest_int("freeze.layers", 0, 2)
        trial.set_user_attr("fold_scores", folds)
        trial.set_user_attr("fold_sizes", [[48, 48]] * len(folds))
        trial.set_user_attr("config", {"training.learning_rate": trial.params["training.learning_rate"]})
        trial.set_user_attr("metric", "accuracy")
        return float(np.mean(folds))

    return run


def test_trials_finished_before_the_baseline_get_a_lift_and_the_best_baseline_is_the_reference(
        tiny_spec_dict: dict) -> None:
    spec = spec_from_dict(tiny_spec_dict)  # no baseline enqueued: trials 0 and 1 run first
    study = open_study(spec)
    optimize(study, fake_objective({0: [0.80, 0.84], 1: [0.70, 0.71]}), 2)
    assert reference_baseline(study) is None and lift_of(study.trials[0], None) is None
    for params in baseline_params(spec_of(tiny_spec_dict, baseline={"trials": 2})):
        study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True})
    optimize(study, fake_objective({2: [0.70, 0.74], 3: [0.78, 0.76]}), 2)  # baselines are outside n_trials
    assert counted_trials(study) == 2 and len(study.trials) == 4
    reference = reference_baseline(study)
    assert reference.number == 3  # the better of the two baseline trials
    lift = lift_of(study.trials[0], reference)
    assert lift.baseline_trial == 3 and lift.mean == pytest.approx(0.05) and lift.folds == 2
    assert lift.test_train_ratio == pytest.approx(1.0)  # 48 rows trained, 48 scored
    table = trials_table(study).splitlines()
    assert table[4].split()[4:6] == ["baseline", "(reference)"] and table[3].split()[4] == "baseline"
    assert "+0.0500" in table[1] and "-0.0650" in table[2]
    assert best_summary(study)["lift"]["mean"] == pytest.approx(0.05)


# -- seeding: study.enqueue and study.warm_start ----------------------------------------------------------


def test_enqueue_is_validated_with_field_paths(tiny_spec_dict: dict) -> None:
    entries = [{"training.learning_rate": 5.0, "freeze.layerz": 1}, {"lora.r": 4}]
    with pytest.raises(SpecError) as caught:
        spec_of(tiny_spec_dict, enqueue=entries)
    message = str(caught.value)
    assert "study.enqueue.0.training.learning_rate: 5.0 is outside [0.0001, 0.01]" in message
    assert "study.enqueue.0.freeze.layerz: unknown knob" in message
    assert "study.enqueue.1.lora.r: is not searched by this spec" in message


def test_enqueued_configurations_follow_the_sweep(tiny_spec_dict: dict) -> None:
    spec = spec_of(tiny_spec_dict, enqueue=[{"freeze.layers": 2, "training.learning_rate": 5e-3}])
    study = open_study(spec)
    assert waiting_params(study)[3] == {"freeze.layers": 2, "training.learning_rate": 5e-3}
    assert study.trials[3].user_attrs["enqueued"] == "user"


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
    assert waiting_params(study)[3:] == [{"freeze.layers": 1}, {"freeze.layers": 2, "training.learning_rate": 2e-3}]
    assert [t.user_attrs.get("enqueued") for t in study.trials[3:]] == ["warm_start:earlier#0",
                                                                         "warm_start:earlier#1"]
    assert "training.learning_rate = 0.5 skipped (0.5 is outside [0.0001, 0.01])" in caplog.text
    assert "lora.r is not searched by this spec; dropped" in caplog.text


def test_warm_start_from_a_missing_study_leaves_no_study(tiny_spec_dict: dict, tmp_path: Path) -> None:
    spec = spec_of(tiny_spec_dict, warm_start={"study": "nope", "storage": f"sqlite:///{tmp_path / 'e.db'}"})
    with pytest.raises(Exception, match=r"study\.warm_start\.storage: no study storage at .*e\.db"):
        open_study(spec)
    assert optuna.get_all_study_names(storage=spec.study.storage) == []
    assert not (tmp_path / "e.db").exists()  # the missing warm-start storage is not created either


# -- export and the report say when the best is not better (no confirmation round) -------------------------


def study_with_scores(tiny_spec_dict: dict, baseline_folds: list[float], other_folds: list[float],
                      **study: object) -> optuna.Study:
    """A stored study with one baseline trial and one searched trial of the given fold scores."""
    spec = spec_of(tiny_spec_dict, n_trials=1, baseline={"trials": 1}, **study)
    stored = open_study(spec)
    optimize(stored, fake_objective({0: baseline_folds, 1: other_folds}), 1)
    return stored


def test_export_says_when_the_best_is_not_significantly_better(tiny_spec_dict: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    study = study_with_scores(tiny_spec_dict, [0.80, 0.78], [0.79, 0.81])  # +0.01 mean, noisy
    spec = export_spec(study)
    assert spec.provenance["trial"] == 1 and spec.provenance["baseline"]["trial"] == 0
    assert spec.provenance["lift"]["mean"] == pytest.approx(0.01) and spec.provenance["confirmation"] is None
    assert "is not significantly better than the tuned baseline" in spec.provenance["lift_warning"]
    code = main(["export", "--study", study.study_name, "--storage", tiny_spec_dict["study"]["storage"],
                 "-o", str(tmp_path / "best.yaml")])
    out = capsys.readouterr().out
    assert code == 0 and "on the search's folds: +0.0100" in out and "warning: trial 1 is not" in out
    assert "corrected resampled t-test over 2×1 folds" in out


def test_export_of_a_study_whose_best_is_the_baseline(tiny_spec_dict: dict) -> None:
    study = study_with_scores(tiny_spec_dict, [0.80, 0.82], [0.60, 0.62])
    spec = export_spec(study)
    assert spec.provenance["trial"] == 0 and spec.provenance["lift"] is None
    assert spec.provenance["lift_warning"].startswith("the best trial is a baseline trial (trial 0")


def test_no_warning_when_the_lift_is_significant(tiny_spec_dict: dict) -> None:
    study = study_with_scores(tiny_spec_dict, [0.70, 0.72, 0.71, 0.70, 0.72], [0.80, 0.83, 0.81, 0.82, 0.80],
                              enqueue=[{"training.learning_rate": 2e-3}])
    spec = export_spec(study)  # the study's enqueue does not travel into the one-configuration spec
    assert spec.provenance["lift_warning"] is None and spec.study.enqueue == []
    assert spec.fixed["training.learning_rate"] == 2e-3


def test_report_shows_the_tuned_baseline_and_the_lift(tiny_spec_dict: dict) -> None:
    from hft_search.reports import figures

    study = study_with_scores(tiny_spec_dict, [0.80, 0.78], [0.79, 0.81])
    card = figures.best_configuration(study).data[0].cells.values
    rows = dict(zip(card[0], card[1], strict=True))
    assert rows["tuned baseline"].startswith("trial #0")
    assert rows["lift over baseline (search folds)"].startswith("+0.0100 ± ")
    assert "corrected resampled t-test" in rows["lift over baseline (search folds)"]
    assert "is not significantly better than the tuned baseline" in rows["warning"]
    lift_column = figures.trials_figure(study).data[0].cells.values[4]
    assert lift_column[0] == "baseline (reference)" and lift_column[1].startswith("+0.0100 (p ")


# -- a study made before the tuned baseline (one baseline trial, lifts stored at trial end) ---------------------


def old_search_hash(spec: object) -> str:
    """``StudySpec.search_hash`` as the code before ``cv.repeats`` and ``cv.group_column`` (and issue 20's
    ``model.pooling`` and ``data.unlabeled*``, issue 23's ``data.deduplicate``) computed it."""
    payload = spec.model_dump(mode="json", include={"data", "model", "cv", "search_space", "fixed"},
                              exclude={"model": {"family", "pooling"}, "cv": {"repeats", "group_column"},
                                       "data": {"unlabeled", "unlabeled_column", "max_unlabeled_samples",
                                                "deduplicate"}})
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def make_old_study(spec: object, url: str) -> None:
    """What hft-search wrote before: trial 0 the one baseline (its learning rate only), trial 1 with a stored
    lift; the stored spec without the new fields."""
    study = optuna.create_study(study_name=spec.name, storage=make_storage(url), direction="maximize")
    dumped = spec.model_dump(mode="json")  # passwords masked by their type
    for section, keys in (("cv", ("repeats", "group_column")), ("model", ("pooling",)),
                          ("data", ("unlabeled", "unlabeled_column", "max_unlabeled_samples", "deduplicate"))):
        for key in keys:
            del dumped[section][key]
    dumped["study"]["baseline"] = True
    for key in ("confirm", "portfolio"):
        del dumped["study"][key]
    for key, value in {"spec": dumped, "spec_hash": old_search_hash(spec), "metric": "accuracy",
                       "objectives": "score", "seeded": True}.items():
        study.set_user_attr(key, value)
    lr = FloatDistribution(1e-4, 1e-2, log=True)
    common = {"metric": "accuracy", "seeds": [0, 1], "fold_best_epochs": [1, 1], "score_std": 0.01}
    study.add_trial(create_trial(
        value=0.7, params={"training.learning_rate": 1e-3}, distributions={"training.learning_rate": lr},
        user_attrs={**common, BASELINE_ATTR: True, "fold_scores": [0.69, 0.71],
                    "config": baseline_config(spec, {"training.learning_rate": 1e-3}).flat()}))
    layers = IntDistribution(0, 2)
    config = {**baseline_config(spec).flat(), "freeze.enabled": True, "freeze.layers": 1}
    study.add_trial(create_trial(
        value=0.75, params={"training.learning_rate": 3e-3, "freeze.layers": 1},
        distributions={"training.learning_rate": lr, "freeze.layers": layers},
        user_attrs={**common, "fold_scores": [0.74, 0.76], "config": config,
                    LIFT_ATTR: {"mean": 0.5, "std": 0.0, "p_value": 0.001, "folds": 2, "baseline_trial": 0}}))


def test_a_study_made_before_the_tuned_baseline_reads_resumes_and_confirms(tiny_spec_dict: dict,
                                                                          capsys: pytest.CaptureFixture) -> None:
    raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "n_trials": 2}}
    spec = spec_from_dict(raw)
    url = raw["study"]["storage"]
    make_old_study(spec, url)
    study = optuna.load_study(study_name="tiny", storage=url)
    # read: the lift is computed now (0.05, with the corrected test), not the stale stored 0.5
    assert lift_of(study.trials[1], reference_baseline(study)).mean == pytest.approx(0.05)
    assert "+0.0500" in trials_table(study).splitlines()[2] and "+0.5000" not in trials_table(study)
    assert counted_trials(study) == 1  # the old baseline is outside n_trials now
    # resume: the hash still matches, no sweep is enqueued, one more searched trial runs
    resumed = run_study(spec)
    assert counted_trials(resumed) == 2 and len(resumed.trials) == 3
    assert sum(bool(t.user_attrs.get(BASELINE_ATTR)) for t in resumed.trials) == 1
    # the confirmation round reads the old stored spec
    assert main(["confirm", "--study", "tiny", "--storage", url, "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "confirmation on fresh folds (2×1 folds, split seed(s) 1, training seeds 2-3" in out
    assert "verdict: trial" in out and "the tuned baseline (trial 0)" in out
