"""Pruning that compares like with like (hft_search/pruning.py): dense fold-epoch steps, never in the final fold,
never a baseline trial, and not before a step has enough trials.

The rules are checked on synthetic trials (reports without training) over every storage backend, since successive
halving keeps its rung values in the storage; then through the CV objective on the tiny model.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_objective import spec_with
from test_storage import postgres_url

from hft_search.baseline import BASELINE_ATTR
from hft_search.objective import CVObjective
from hft_search.pruning import (
    MIN_TRIALS_PER_RUNG,
    GuardedPruner,
    ReportSchedule,
    guarded_pruner,
    late_prunes,
)
from hft_search.storage import delete_study_if_exists, make_storage
from hft_search.study import make_pruner, open_study
from hft_search.workers import optimize

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

Values = Callable[[int], float]
"""The value a synthetic trial reports at a step."""


def reporting(values: Values, steps: range, *, baseline: bool = False) -> Callable[[optuna.Trial], float]:
    """An objective that reports ``values(step)`` at every step, asks the pruner each time as the CV objective
    does, and stops when told to."""

    def objective(trial: optuna.Trial) -> float:
        if baseline:
            trial.set_user_attr(BASELINE_ATTR, True)
        for step in steps:
            trial.report(values(step), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return values(steps[-1])

    return objective


def constant(value: float) -> Values:
    return lambda step: value


@pytest.fixture(params=["memory", "sqlite", "journal", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/prune.db"
    if request.param == "journal":
        return f"journal:{tmp_path}/prune.journal"
    return postgres_url()


@pytest.fixture
def new_study(storage_url: str | None) -> Iterator[Callable[[optuna.pruners.BasePruner], optuna.Study]]:
    """Studies of this test's own on the backend (deleted afterwards), with the pruner given."""
    storage = None if storage_url is None else make_storage(storage_url)
    names: list[str] = []

    def create(pruner: optuna.pruners.BasePruner) -> optuna.Study:
        names.append(f"test-pruning-{uuid.uuid4().hex[:12]}")
        return optuna.create_study(storage=storage, study_name=names[-1], direction="maximize", pruner=pruner)

    yield create
    if storage is not None:
        for name in names:
            delete_study_if_exists(name, storage)


SCHEDULE = ReportSchedule(folds=3, max_epochs=3)
"""9 fold-epoch steps; the final fold is steps 7 to 9, where successive halving has its rung at 9."""
STEPS = range(1, 10)


class TestRules:
    def test_no_trial_is_pruned_before_enough_trials_reached_the_step(self, new_study: Callable,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
        study = new_study(guarded_pruner("successive_halving", SCHEDULE))
        study.optimize(reporting(constant(0.9), STEPS), n_trials=MIN_TRIALS_PER_RUNG - 2)
        with caplog.at_level(logging.INFO, logger="hft_search.pruning"):
            study.optimize(reporting(constant(0.1), STEPS), n_trials=1)  # the 5th at step 1: spared
        assert study.trials[-1].state == TrialState.COMPLETE
        assert f"only {MIN_TRIALS_PER_RUNG - 1} trial(s) have reached it, pruning starts once " \
               f"{MIN_TRIALS_PER_RUNG} have" in caplog.text
        study.optimize(reporting(constant(0.1), STEPS), n_trials=1)  # the 6th: pruned at its first rung
        assert study.trials[-1].state == TrialState.PRUNED and study.trials[-1].last_step == 1

    def test_a_trial_that_reached_its_final_fold_completes(self, new_study: Callable) -> None:
        # The competitors were worse until the final fold and far better in it: successive halving's rung at
        # step 9 (1, 3, 9) would prune the trial there, after it paid its whole cost.
        late_bloomers = reporting(lambda step: 0.0 if step <= 6 else 1.0, STEPS)
        steady = reporting(constant(0.5), STEPS)

        plain = new_study(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
        plain.optimize(late_bloomers, n_trials=MIN_TRIALS_PER_RUNG)
        plain.optimize(steady, n_trials=1)
        assert plain.trials[-1].state == TrialState.PRUNED and plain.trials[-1].last_step == 9  # the defect

        guarded = new_study(guarded_pruner("successive_halving", SCHEDULE))
        guarded.optimize(late_bloomers, n_trials=MIN_TRIALS_PER_RUNG)
        guarded.optimize(steady, n_trials=1)
        assert guarded.trials[-1].state == TrialState.COMPLETE
        assert sorted(guarded.trials[-1].intermediate_values) == list(STEPS)

    def test_a_baseline_trial_is_never_pruned_yet_others_are_judged_against_it(self, new_study: Callable) -> None:
        study = new_study(guarded_pruner("successive_halving", SCHEDULE))
        study.optimize(reporting(constant(0.9), STEPS), n_trials=MIN_TRIALS_PER_RUNG)
        study.optimize(reporting(constant(0.1), STEPS, baseline=True), n_trials=1)  # worse at every rung
        assert study.trials[-1].state == TrialState.COMPLETE

        baselines = new_study(guarded_pruner("successive_halving", SCHEDULE))
        baselines.optimize(reporting(constant(0.9), STEPS, baseline=True), n_trials=MIN_TRIALS_PER_RUNG - 1)
        baselines.optimize(reporting(constant(0.5), STEPS), n_trials=1)  # the baselines' rung values beat it
        assert [t.state for t in baselines.trials] == [TrialState.COMPLETE] * (MIN_TRIALS_PER_RUNG - 1) + \
            [TrialState.PRUNED]

    @pytest.mark.parametrize("name", ["hyperband", "median"])
    def test_every_pruner_of_a_spec_keeps_the_final_fold(self, new_study: Callable, name: str) -> None:
        study = new_study(guarded_pruner(name, SCHEDULE))
        study.optimize(reporting(lambda step: 0.0 if step <= 6 else 1.0, STEPS), n_trials=2 * MIN_TRIALS_PER_RUNG)
        study.optimize(reporting(constant(0.5), STEPS), n_trials=MIN_TRIALS_PER_RUNG)
        assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_the_schedule_names_each_fold_epoch_once_and_the_steps_before_the_final_fold() -> None:
    steps = [SCHEDULE.step(fold, epoch) for fold in range(3) for epoch in range(1, 4)]
    assert steps == list(STEPS) and [SCHEDULE.fold_of(s) for s in steps] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [s for s in steps if SCHEDULE.prunable(s)] == list(range(1, 7)) and SCHEDULE.last_prunable_step == 6
    per_fold = ReportSchedule(folds=5)
    assert [per_fold.step(f) for f in range(5)] == [0, 1, 2, 3, 4] and per_fold.last_prunable_step == 3
    assert not per_fold.prunable(4)
    with pytest.raises(ValueError, match="epoch must be in 1..3"):
        SCHEDULE.step(0, 4)


def test_make_pruner_guards_every_pruner_of_a_spec(tiny_spec_dict: dict) -> None:
    for name in ("successive_halving", "hyperband", "median"):
        pruner = make_pruner(spec_with(tiny_spec_dict, study={"pruner": name}))
        assert isinstance(pruner, GuardedPruner)
        assert pruner.schedule == ReportSchedule(2, 1 if name != "median" else None)
    assert isinstance(make_pruner(spec_with(tiny_spec_dict, study={"pruner": "none"})), optuna.pruners.NopPruner)


def test_late_prunes_counts_pruned_trials_that_had_spent_most_of_their_cost() -> None:
    study = optuna.create_study()
    for spent, state in ((5, TrialState.PRUNED), (4, TrialState.PRUNED), (6, TrialState.COMPLETE),
                         (2, TrialState.PRUNED)):
        study.add_trial(optuna.trial.create_trial(
            state=state, value=0.5 if state == TrialState.COMPLETE else None,
            user_attrs={"fold_epochs": spent, "config": {"training.epochs": 2}}))
    assert late_prunes(study, folds=3) == [0]  # 5 of 6 fold-epochs; 4 of 6 is 67 %
    assert late_prunes(study, folds=3, share=0.6) == [0, 1]


# -- through the CV objective, real fine-tunes ----------------------------------------------------------------


def test_every_trial_reports_at_every_fold_epoch_with_early_stopping_and_fewer_epochs(tiny_spec_dict: dict) -> None:
    # Patience 1 ends folds early; a trial of 1 or 2 epochs trains fewer than the spec's 3. Every trial still
    # reports at steps 1..6, a fold's score carried forward through the epochs it did not train.
    raw = {**tiny_spec_dict, "fixed": {"training.batch_size": 8, "training.patience": 1}}
    spec = spec_with(raw, study={"pruner": "successive_halving", "n_trials": 4},
                     search_space={"training.learning_rate": {"float": [1e-4, 1e-2], "log": True},
                                   "training.epochs": {"int": [1, 3]}})
    study = open_study(spec)
    for lr, epochs in ((1e-2, 3), (3e-3, 3), (1e-2, 2), (3e-3, 1)):
        study.enqueue_trial({"training.learning_rate": lr, "training.epochs": epochs})
    optimize(study, CVObjective(spec), 4)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    stopped_early = 0
    for trial in study.trials:
        values, attrs = trial.intermediate_values, trial.user_attrs
        assert sorted(values) == [1, 2, 3, 4, 5, 6]
        for fold, ran in enumerate(attrs["fold_epochs_run"]):
            finished = attrs["fold_scores"][:fold + 1]
            for epoch in range(ran + 1, 4):  # carried forward: the mean of the folds finished by then
                assert values[fold * 3 + epoch] == pytest.approx(sum(finished) / len(finished))
            stopped_early += ran < trial.params["training.epochs"]
        assert values[6] == pytest.approx(trial.value)
    assert stopped_early > 0, "no fold stopped early: the test would not exercise carrying forward"


def test_a_trial_in_its_final_fold_is_not_pruned_by_the_rung_there(tiny_spec_dict: dict) -> None:
    # 2 folds of 2 epochs: rungs at steps 1 and 3, and step 3 is fold 1 (the final fold). The competitors were
    # hopeless in fold 0 and perfect in fold 1: the real trial wins rung 1, loses rung 3, and completes.
    spec = spec_with(tiny_spec_dict, study={"pruner": "successive_halving", "n_trials": MIN_TRIALS_PER_RUNG},
                     fixed={"training.epochs": 2, "training.batch_size": 8, "training.patience": 5})
    study = open_study(spec)
    study.optimize(reporting(lambda step: 0.0 if step <= 2 else 1.0, range(1, 5)), n_trials=MIN_TRIALS_PER_RUNG - 1)
    optimize(study, CVObjective(spec), MIN_TRIALS_PER_RUNG)
    trial = study.trials[-1]
    assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [1, 2, 3, 4]
    assert trial.intermediate_values[3] < 1.0  # it did lose the rung at step 3


def test_the_baseline_is_not_pruned_where_the_same_configuration_is(tiny_spec_dict: dict) -> None:
    spec = spec_with(tiny_spec_dict, study={"pruner": "successive_halving", "n_trials": MIN_TRIALS_PER_RUNG + 1},
                     fixed={"training.epochs": 2, "training.batch_size": 16})
    study = open_study(spec)
    study.optimize(reporting(constant(0.99), range(1, 5)), n_trials=MIN_TRIALS_PER_RUNG - 1)
    params = {"training.learning_rate": 1e-3, "freeze.layers": 0}
    study.enqueue_trial(params)  # the baseline's configuration as a searched trial: pruned at step 1
    study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True})  # the baseline: fitted again, and completes
    optimize(study, CVObjective(spec), MIN_TRIALS_PER_RUNG)  # the baseline is outside n_trials and runs anyway
    searched, baseline = study.trials[-2:]
    assert searched.state == TrialState.PRUNED and searched.last_step == 1
    assert baseline.state == TrialState.COMPLETE and baseline.value < 0.99
    assert sorted(baseline.intermediate_values) == [1, 2, 3, 4] and "repeat_of" not in baseline.user_attrs
