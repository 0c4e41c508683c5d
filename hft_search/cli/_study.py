"""The study commands: run, worker, launch, requeue, status, best and confirm.

They share a storage and a study name, and ``run``/``worker`` share how a finished study becomes an exit
status (:func:`_finish`), so they live together; each imports the search stack only when it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import TYPE_CHECKING

import yaml

from hft_search.cli._exit import EXIT_FAILED, EXIT_SHORT

if TYPE_CHECKING:
    import optuna

    from hft_search.spec import StudySpec


def _finish(study: optuna.Study, spec: StudySpec, args: argparse.Namespace, started: float) -> int:
    """Print the best trial; exit :data:`EXIT_FAILED` with one line when every trial failed, and
    :data:`EXIT_SHORT` when the study is short of ``n_trials``."""
    from hft_search import describe_best, resolve_storage_url
    from hft_search.study import target_trials
    from hft_search.workers import no_result, shortfall

    print(describe_best(study, resolve_storage_url(args.storage, spec.study.storage)))
    failed = no_result(study)
    if failed is not None:
        print(f"error: {failed}", file=sys.stderr)
        return EXIT_FAILED
    why = shortfall(study, target_trials(spec, getattr(args, "n_trials", None)))
    timed_out = spec.study.timeout is not None and time.monotonic() - started >= spec.study.timeout
    if why is None or timed_out:
        return 0
    print(f"error: {why}", file=sys.stderr)
    return EXIT_SHORT


def cmd_run(args: argparse.Namespace) -> int:
    """Validate the spec, then run (or resume) the study in this process until ``n_trials`` count."""
    from hft_search import run_study, validate

    spec = validate(args.spec)  # every check of `validate` before a study exists
    started = time.monotonic()
    study = run_study(spec, n_trials=args.n_trials, storage=args.storage, study_name=args.study_name,
                      progress=sys.stderr.isatty() and not args.no_progress, spec_file=args.spec)
    return _finish(study, spec, args, started)


def cmd_worker(args: argparse.Namespace) -> int:
    """Join (or create) the study as one of many workers on a shared storage."""
    from hft_search import validate
    from hft_search.study import run_worker

    spec = validate(args.spec)
    if args.threads is not None:
        from hft_search.launch import use_threads

        logging.getLogger("hft_search.cli").info("worker uses %d torch threads (--threads)", use_threads(args.threads))
    started = time.monotonic()
    study = run_worker(spec, storage=args.storage, study_name=args.study_name,
                       progress=sys.stderr.isatty() and not args.no_progress, spec_file=args.spec)
    return _finish(study, spec, args, started)


def cmd_requeue(args: argparse.Namespace) -> int:
    """Hand the RUNNING trials of dead workers back to the queue (journal storages have no heartbeat)."""
    from hft_search import load_study
    from hft_search.workers import requeue_running

    numbers = requeue_running(load_study(args.study, args.storage), older_than_s=args.older_than)
    print(f"re-queued {len(numbers)} trial(s)" + (f": {', '.join(map(str, numbers))}" if numbers else ""))
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    """Run the study with Ray-placed workers; exit 1 when it ended short of ``n_trials``."""
    from hft_search import validate
    from hft_search.launch import launch

    outcome = launch(validate(args.spec), workers=args.workers, address=args.address,
                     gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                     storage=args.storage, study_name=args.study_name, spec_file=args.spec)
    threads = ", ".join(f"{w.name}@{w.host}: {w.threads} threads" for w in outcome.workers)
    print(f"{outcome.counted} of {outcome.n_trials} trials counted; workers: {threads or 'none finished'}")
    for error in outcome.errors:
        print(f"worker error: {error}", file=sys.stderr)
    return 0 if outcome.done else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    """Print the study's trials as a table."""
    from hft_search import load_study, trials_table

    print(trials_table(load_study(args.study, args.storage)))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """Print the best (or a given) trial as YAML or JSON, for people and for scripts."""
    from hft_search import best_summary, load_study

    summary = best_summary(load_study(args.study, args.storage), trial_number=args.trial)
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(yaml.safe_dump(summary, sort_keys=False), end="")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    """Re-fit the top configurations on fresh folds and print the winner's tested lift."""
    from hft_search.confirm import confirm_stored, describe_confirmation

    study, confirmation = confirm_stored(args.study, args.storage, top=args.top, repeats=args.repeats)
    print("\n".join(describe_confirmation(confirmation, study)))
    return 0
