"""A worker process with a near-zero-cost objective, for tests/test_workers.py and benchmarks/storage.py.

It runs the real worker (:func:`hft_search.study.run_worker`: place check, waiting, heartbeats, signals,
re-queues); only the objective differs from ``hft-search worker``. The objective writes to the storage what a
3-fold CV trial writes (two parameters, one intermediate value per fold, the user attributes of
``docs/user_attrs.md``), so that its storage traffic is that of a real trial, and then sleeps ``--sleep``
seconds in place of the fine-tunes.

    python tests/cheap_worker.py STORAGE_URL STUDY_NAME N_TRIALS [--sleep S] [--sampler grid] ...

Exit status: 0 when the worker left normally, 130 when it was interrupted (as ``hft-search``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

import optuna

from hft_search.spec import StudySpec, spec_from_dict
from hft_search.storage import install_log_masking
from hft_search.study import run_worker

FOLDS = 3
SEARCH_SPACE = {"freeze.layers": {"int": [0, 5]}, "training.epochs": {"int": [1, 4]}}
GRID_SIZE = 6 * 4
STARTED = "started"
"""User attribute: the process id of the worker running the trial, written before the objective sleeps."""


def cheap_spec(name: str, storage: str, n_trials: int, *, sampler: str = "random", heartbeat: int = 60,
               grace: int | None = None, max_retries: int = 3) -> StudySpec:
    return spec_from_dict({
        "name": name,
        "data": {"train": "unused.csv"},
        "search_space": SEARCH_SPACE,
        "study": {"n_trials": n_trials, "storage": storage, "sampler": sampler, "pruner": "none",
                  "heartbeat_interval": heartbeat, "grace_period": grace, "max_retries": max_retries},
    })


class CheapObjective:
    """Deterministic in the parameters; ``seconds`` of sleep stand for the fine-tunes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, trial: optuna.Trial) -> float:
        layers = trial.suggest_int("freeze.layers", 0, 5)
        epochs = trial.suggest_int("training.epochs", 1, 4)
        trial.set_user_attr(STARTED, os.getpid())  # after sampling: a trial seen started has all its params
        value = layers + epochs / 10
        time.sleep(self.seconds)
        for fold in range(FOLDS):
            trial.report(value, fold)
        for key, attr in {
            "metric": "accuracy", "fold_scores": [value] * FOLDS, "fold_times_s": [self.seconds / FOLDS] * FOLDS,
            "seed": 0, "device": "cpu", "versions": {"optuna": optuna.__version__}, "data_fingerprint": "0" * 16,
            "config": {"freeze.layers": layers, "training.epochs": epochs}, "score_mean": value,
            "score_std": 0.0, "trainable_params": 1000, "total_params": 2000, "trainable_fraction": 0.5,
        }.items():
            trial.set_user_attr(key, attr)
        return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage")
    parser.add_argument("study")
    parser.add_argument("n_trials", type=int)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per trial")
    parser.add_argument("--sampler", default="random")
    parser.add_argument("--heartbeat", type=int, default=60)
    parser.add_argument("--grace", type=int)
    parser.add_argument("--max-retries", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    install_log_masking()
    spec = cheap_spec(args.study, args.storage, args.n_trials, sampler=args.sampler, heartbeat=args.heartbeat,
                      grace=args.grace, max_retries=args.max_retries)
    try:
        run_worker(spec, objective=CheapObjective(args.sleep))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
