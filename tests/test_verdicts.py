"""How a trial ends: a repeated configuration reuses only a COMPLETE verdict, and out-of-memory (a CUDA error or
the refusal before training) does not stop a worker. Real fine-tunes of the tiny model."""

from __future__ import annotations

import pytest
import torch
from optuna.trial import TrialState
from test_objective import spec_with

from hft_search import cv as cv_module
from hft_search.exceptions import ConsecutiveFailures
from hft_search.objective import CVObjective
from hft_search.study import open_study
from hft_search.training import loop
from hft_search.workers import FAILURE_KIND_ATTR, counted_trials, optimize

PARAMS = {"training.learning_rate": 3e-3, "freeze.layers": 1}
BOOKKEEPING = {"enqueued", "fold_epochs"}
"""Attributes of how a trial came about or what it cost, which a repeat does not copy."""


def test_a_repeat_of_a_completed_configuration_copies_its_verdict_and_nothing_else(tiny_spec_dict: dict) -> None:
    spec = spec_with(tiny_spec_dict, study={"n_trials": 2})
    study = open_study(spec)
    study.enqueue_trial(PARAMS, user_attrs={"enqueued": "user"})
    study.enqueue_trial(PARAMS)
    optimize(study, CVObjective(spec), 2)
    first, repeat = study.trials
    assert first.state == repeat.state == TrialState.COMPLETE and repeat.value == first.value
    assert repeat.user_attrs["repeat_of"] == 0 and repeat.user_attrs["fold_epochs"] == 0  # it trained nothing
    assert "enqueued" not in repeat.user_attrs and not repeat.intermediate_values
    # every attribute of the completed trial's verdict is copied: one added to the objective and not to
    # objective.VERDICT_ATTRS fails here
    assert {k: v for k, v in first.user_attrs.items() if k not in BOOKKEEPING} == \
        {k: v for k, v in repeat.user_attrs.items() if k != "repeat_of" and k not in BOOKKEEPING}


def test_a_failed_configuration_is_fitted_again_and_fails_fast_only_for_its_own_failures(
        tiny_spec_dict: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # Trial 0 hits a broken fold (an exception); trial 1 proposes the same configuration. Copying the failure
    # would make two exceptions in a row, which stops a worker at max_consecutive_failures=2, and would
    # never score the configuration.
    real, calls = cv_module.fine_tune, []

    def broken_once(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a transient fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(cv_module, "fine_tune", broken_once)
    spec = spec_with(tiny_spec_dict, study={"n_trials": 2, "max_consecutive_failures": 2})
    study = open_study(spec)
    study.enqueue_trial(PARAMS)
    study.enqueue_trial(PARAMS)
    optimize(study, CVObjective(spec), 2, max_consecutive_failures=2)
    failed, again = study.trials
    assert failed.state == TrialState.FAIL and failed.user_attrs[FAILURE_KIND_ATTR] == "exception"
    assert again.state == TrialState.COMPLETE and len(again.user_attrs["fold_scores"]) == 2
    assert not {"repeat_of", "fail_reason", FAILURE_KIND_ATTR} & again.user_attrs.keys()
    assert counted_trials(study) == 2 and len(study.trials) == 2


def test_a_pruned_configuration_is_fitted_again(tiny_spec_dict: dict) -> None:
    # A weight decay so large that the weights, then the loss, overflow: PRUNED with its reason, and again when
    # proposed again, trained again rather than copied (no repeat_of).
    raw = {**tiny_spec_dict, "fixed": {**tiny_spec_dict["fixed"], "training.learning_rate": 1.0,
                                       "training.weight_decay": 1e12, "training.max_grad_norm": 0.0}}
    spec = spec_with(raw, search_space={"freeze.layers": {"int": [0, 1]}}, study={"n_trials": 2})
    study = open_study(spec)
    study.enqueue_trial({"freeze.layers": 0})
    study.enqueue_trial({"freeze.layers": 0})
    optimize(study, CVObjective(spec), 2)
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED and trial.user_attrs["fail_reason"].startswith("loss became")
        assert "repeat_of" not in trial.user_attrs


def test_a_configuration_refused_for_device_memory_is_out_of_memory_and_the_worker_goes_on(
        tiny_spec_dict: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real refusal before training (training.memory.check_fits), as on a GPU with 1 KiB free, for the
    # first three trials; three such trials in a row must not stop a worker at max_consecutive_failures=2.
    refusals = []

    def nearly_full(device: torch.device) -> int | None:
        refusals.append(1)
        return 1024 if len(refusals) <= 3 else None

    monkeypatch.setattr(loop, "free_device_memory", nearly_full)
    spec = spec_with(tiny_spec_dict, study={"n_trials": 4, "sampler": "random"})
    study = open_study(spec)
    try:
        optimize(study, CVObjective(spec), 4, max_consecutive_failures=2)
    except ConsecutiveFailures as error:  # pragma: no cover - the failure this test exists to catch
        pytest.fail(f"out-of-memory trials stopped the worker: {error}")
    *refused, done = study.trials
    assert len(refused) == 3 and done.state == TrialState.COMPLETE
    for trial in refused:
        assert trial.state == TrialState.FAIL and trial.user_attrs[FAILURE_KIND_ATTR] == "oom"
        assert trial.user_attrs["fail_reason"].startswith("out of memory in fold 0: ")
