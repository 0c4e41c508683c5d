"""The CV study engine on the tiny model: samplers, pruners, caches, failures, conditional knobs, Pareto fronts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from hft_search import cv as cv_module
from hft_search import spec_from_dict
from hft_search.caching import Cache
from hft_search.objective import CVObjective
from hft_search.pruning import MIN_TRIALS_PER_RUNG
from hft_search.study import open_study, run_study
from hft_search.workers import optimize

SAMPLERS = ["tpe", "random", "gp", "cmaes", "grid"]


def spec_with(base: dict, **sections: dict) -> object:
    raw = dict(base)
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) and key != "search_space" else value
    return spec_from_dict(raw)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs(tiny_spec_dict: dict, sampler: str) -> None:
    space = {"training.learning_rate": {"float": [1e-3, 1e-2], "step": 3e-3} if sampler == "grid"
             else {"float": [1e-3, 1e-2], "log": True}, "freeze.layers": {"int": [0, 2]}}
    spec = spec_with(tiny_spec_dict, search_space=space, study={"sampler": sampler, "n_trials": 2})
    study = run_study(spec)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband", "wilcoxon", "median", "none"])
def test_each_pruner_runs(tiny_spec_dict: dict, pruner: str) -> None:
    folds = {"folds": 5} if pruner == "wilcoxon" else {}
    spec = spec_with(tiny_spec_dict, cv=folds, study={"pruner": pruner, "n_trials": 2})
    assert len(run_study(spec).trials) == 2


def test_wilcoxon_prunes_a_clearly_worse_trial_before_its_last_fold(tiny_spec_dict: dict) -> None:
    # The random tiny BERT needs ~60 steps before it starts to learn: 10 epochs of batch 8, no early stop.
    # Four mediocre trials first, so that six trials have reached the fold where the test can reject.
    spec = spec_with(tiny_spec_dict, cv={"folds": 5}, study={"pruner": "wilcoxon", "n_trials": 6},
                     fixed={"training.epochs": 10, "training.batch_size": 8, "training.patience": 10})
    study = open_study(spec)
    study.optimize(_competitor(0.5, range(5)), n_trials=MIN_TRIALS_PER_RUNG - 2)
    study.enqueue_trial({"training.learning_rate": 3e-3, "freeze.layers": 0})
    study.enqueue_trial({"training.learning_rate": 1e-6, "freeze.layers": 2})  # far too slow to learn anything
    optimize(study, CVObjective(spec), MIN_TRIALS_PER_RUNG)
    good, bad = study.trials[-2:]
    assert good.state == TrialState.COMPLETE
    assert bad.state == TrialState.PRUNED, (good.intermediate_values, bad.intermediate_values)
    assert len(bad.intermediate_values) < 5 and "pruned after fold" in bad.user_attrs["fail_reason"]


def _competitor(value: float, steps: range) -> Callable[[optuna.Trial], float]:
    """An objective whose running CV estimate is ``value`` at every step, judged by the study's pruner."""

    def objective(trial: optuna.Trial) -> float:
        for step in steps:
            trial.report(value, step)
            trial.should_prune()  # records the rungs it reached, as a real trial's would be
        return value

    return objective


@pytest.mark.parametrize(("competitor", "pruned"), [(0.95, True), (0.05, False)])
def test_successive_halving_stops_a_hopeless_trial_after_its_first_epoch_and_lets_a_good_one_finish(
        tiny_spec_dict: dict, competitor: float, pruned: bool) -> None:
    # Against trials that were far better at every fold-epoch, the trial stops after fold 0's first epoch;
    # against far worse ones, it is the best at every rung before the final fold (1, 3) and runs every fold.
    spec = spec_with(tiny_spec_dict, cv={"folds": 2}, study={"pruner": "successive_halving", "n_trials": 6},
                     fixed={"training.epochs": 5, "training.batch_size": 16, "training.patience": 10})
    study = open_study(spec)
    study.optimize(_competitor(competitor, range(1, 11)), n_trials=MIN_TRIALS_PER_RUNG - 1)
    optimize(study, CVObjective(spec), MIN_TRIALS_PER_RUNG)
    trial = study.trials[-1]
    if pruned:
        assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
        assert trial.user_attrs["fail_reason"] == "pruned at fold 0 epoch 1 (successive_halving)"
        assert trial.user_attrs["fold_scores"] == []  # no fold finished: no fold score recorded
    else:
        assert trial.state == TrialState.COMPLETE and len(trial.user_attrs["fold_scores"]) == 2
        # every fold-epoch reported at step fold * 5 + epoch: the running CV estimate
        assert sorted(trial.intermediate_values) == list(range(1, 11))


def test_conditional_knobs_absent_when_their_group_is_off(tiny_spec_dict: dict) -> None:
    space = {"training.learning_rate": {"float": [1e-3, 1e-2], "log": True},
             "lora.enabled": {"categorical": [True, False]}, "lora.r": {"int": [2, 4]},
             "importance.enabled": {"categorical": [True, False]}, "importance.threshold": {"float": [0.0, 0.9]}}
    spec = spec_with(tiny_spec_dict, search_space=space, study={"sampler": "random", "n_trials": 6})
    study = run_study(spec)
    for trial in study.trials:
        for group, knob in (("lora", "lora.r"), ("importance", "importance.threshold")):
            assert (knob in trial.params) == trial.params[f"{group}.enabled"]
            assert trial.user_attrs["config"][f"{group}.enabled"] == trial.params[f"{group}.enabled"]
    assert {t.params["lora.enabled"] for t in study.trials} == {True, False}


def test_cache_hits_on_second_trial(tiny_spec_dict: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    space = {"training.learning_rate": {"float": [1e-3, 1e-2], "log": True}}
    fixed = {**tiny_spec_dict["fixed"], "importance.enabled": True, "importance.threshold": 0.5,
             "distill.enabled": True, "distill.alpha": 0.5, "distill.student_layers": 2}
    spec = spec_with(tiny_spec_dict, search_space=space, fixed=fixed, study={"n_trials": 2})
    cache = Cache(tmp_path / "cache")
    study = open_study(spec)
    optimize(study, CVObjective(spec, cache=cache), 2)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    stats = cache.stats
    assert stats["teacher_logits"] == {"hits": 2, "misses": 2, "corrupt": 0}  # 2 folds: computed once each
    assert stats["importance"] == {"hits": 2, "misses": 2, "corrupt": 0}
    assert stats["tokenized"]["misses"] == 1
    CVObjective(spec, cache=cache)  # a second process-like objective reads the tokenized data from disk
    assert cache.stats["tokenized"]["hits"] == 1
    assert len(study.trials[0].user_attrs["teacher_scores"]) == 2


def test_corrupted_cache_entry_is_recomputed(tiny_spec_dict: dict, tmp_path: Path) -> None:
    spec = spec_from_dict(tiny_spec_dict)
    cache = Cache(tmp_path / "cache")
    first = CVObjective(spec, cache=cache)
    entry = next((tmp_path / "cache" / "tokenized").rglob("*.pt"))
    entry.write_bytes(entry.read_bytes()[:-100])
    again = CVObjective(spec, cache=Cache(tmp_path / "cache"))
    assert torch.equal(first.cv.tokens.input_ids, again.cv.tokens.input_ids)


def test_out_of_memory_is_recorded_and_the_study_goes_on(tiny_spec_dict: dict,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = cv_module.fine_tune
    calls = {"n": 0}

    def out_of_memory_once(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(cv_module, "fine_tune", out_of_memory_once)
    study = run_study(spec_from_dict(tiny_spec_dict))
    first, second = study.trials[0], study.trials[-1]
    assert first.state == TrialState.FAIL and "out of memory in fold 0" in first.user_attrs["fail_reason"]
    assert second.state == TrialState.COMPLETE and len(study.trials) == 2  # the failure counts as a verdict


def test_nan_loss_is_pruned_with_its_reason(tiny_spec_dict: dict) -> None:
    spec = spec_with(tiny_spec_dict, search_space={"freeze.layers": {"int": [0, 1]}},
                     fixed={**tiny_spec_dict["fixed"], "training.learning_rate": 1.0, "training.max_grad_norm": 0.0,
                            "training.weight_decay": 1e12})  # the rate is bounded by 1: decay blows the weights up
    study = run_study(spec)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert "nan" in trial.user_attrs["fail_reason"].lower() or "inf" in trial.user_attrs["fail_reason"].lower()


def test_multi_objective_gives_a_pareto_front(tiny_spec_dict: dict) -> None:
    space = {"training.learning_rate": {"float": [1e-3, 1e-2], "log": True},
             "importance.threshold": {"float": [0.0, 0.9]}}
    spec = spec_with(tiny_spec_dict, search_space=space,
                     study={"objectives": "score+trainable_fraction", "sampler": "nsga2", "n_trials": 4})
    study = run_study(spec)
    assert len(study.directions) == 2 and len(study.trials) == 4
    front = study.best_trials
    assert front and all(t.values[1] == pytest.approx(t.user_attrs["trainable_fraction"]) for t in front)


def test_interrupted_trial_does_not_count(tiny_spec_dict: dict) -> None:
    spec = spec_from_dict(tiny_spec_dict)
    study = open_study(spec)

    def interrupt(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(study, interrupt, 2)
    assert study.trials[0].state == TrialState.FAIL
    run_study(spec)  # resume: two counted trials on top of the interrupted one
    assert [t.state for t in study.trials[1:]] == [TrialState.COMPLETE] * 2


def test_memory_is_released_between_trials(tiny_spec_dict: dict, caplog: pytest.LogCaptureFixture) -> None:
    import gc

    spec = spec_with(tiny_spec_dict, study={"n_trials": 4})
    objective = CVObjective(spec)
    study = open_study(spec)
    optimize(study, objective, 2)
    gc.collect()
    models_after_two = sum(isinstance(o, torch.nn.Module) and hasattr(o, "config") for o in gc.get_objects())
    optimize(study, objective, 4)
    gc.collect()
    models_after_four = sum(isinstance(o, torch.nn.Module) and hasattr(o, "config") for o in gc.get_objects())
    assert models_after_four == models_after_two
    logging.getLogger(__name__).info("live models: %d", models_after_four)
