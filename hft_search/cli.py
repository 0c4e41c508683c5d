"""``hft-search``: the command line. It parses arguments and calls the public API, nothing more.

Every error raised on purpose (:class:`~hft_search.exceptions.HFTSearchError`) is printed as one clear
message, with no traceback; ``--verbose`` shows the traceback for bug reports.

Exit status (also in ``hft-search --help``):

* 0: done;
* 1 (:data:`EXIT_FAILED`): the work ran and failed: a worker stopped after ``study.max_consecutive_failures``
  failing trials in a row, a study ended with no completed trial because its trials failed, ``verify``'s
  re-run disagrees with the record, ``launch`` ended short of ``n_trials``;
* 2 (:data:`EXIT_USAGE`): bad input or a place that cannot be used (a spec, data, a path, a storage, a full
  or read-only disk), one ``error:`` line; nothing was created, lost or half-written;
* 3 (:data:`EXIT_SHORT`): ``run``/``worker`` ended with fewer than ``n_trials`` counted trials;
* 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    import optuna

    from hft_search.spec import StudySpec

EXIT_FAILED = 1
"""The work ran and failed (see the module docstring); the same as ``ConsecutiveFailures.exit_code``."""
EXIT_USAGE = 2
EXIT_SHORT = 3
"""``run``/``worker`` ended with fewer than ``n_trials`` counted trials (not because of ``study.timeout``)."""

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (``--n-trials 0`` or ``-5`` is a mistake, not a no-op)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def _cmd_validate(args: argparse.Namespace) -> int:
    from hft_search import validate

    spec = validate(args.spec, check_model=not args.no_model_check)
    if not args.no_model_check:
        from hft_search.models import model_info

        print(f"# model: {model_info(spec.model.name, spec.model.revision).describe()}")
    body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)  # passwords masked by their type
    print(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), end="")
    return 0


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


def _cmd_run(args: argparse.Namespace) -> int:
    from hft_search import run_study, validate

    spec = validate(args.spec)  # every check of `validate` before a study exists
    started = time.monotonic()
    study = run_study(spec, n_trials=args.n_trials, storage=args.storage, study_name=args.study_name,
                      progress=sys.stderr.isatty() and not args.no_progress, spec_file=args.spec)
    return _finish(study, spec, args, started)


def _cmd_worker(args: argparse.Namespace) -> int:
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


def _cmd_requeue(args: argparse.Namespace) -> int:
    from hft_search import load_study
    from hft_search.workers import requeue_running

    numbers = requeue_running(load_study(args.study, args.storage), older_than_s=args.older_than)
    print(f"re-queued {len(numbers)} trial(s)" + (f": {', '.join(map(str, numbers))}" if numbers else ""))
    return 0


def _cmd_launch(args: argparse.Namespace) -> int:
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


def _cmd_status(args: argparse.Namespace) -> int:
    from hft_search import load_study, trials_table

    print(trials_table(load_study(args.study, args.storage)))
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    from hft_search import best_summary, load_study

    summary = best_summary(load_study(args.study, args.storage), trial_number=args.trial)
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(yaml.safe_dump(summary, sort_keys=False), end="")
    return 0


def _cmd_confirm(args: argparse.Namespace) -> int:
    from hft_search.confirm import confirm_stored, describe_confirmation

    study, confirmation = confirm_stored(args.study, args.storage, top=args.top, repeats=args.repeats)
    print("\n".join(describe_confirmation(confirmation, study)))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from hft_search import export_best
    from hft_search.baseline import Lift
    from hft_search.summary import value_with_std

    spec = export_best(args.study, args.storage, args.output, trial=args.trial, fmt=args.format, force=args.force)
    prov = spec.provenance
    print(f"wrote {args.output}: trial {prov['trial']} of study {prov['study']!r}, "
          f"{prov['metric']} {value_with_std(prov['value'], prov.get('std'))}")
    confirmed = prov.get("confirmation") or {}
    if confirmed.get("confirmed_value") is not None:
        print(f"confirmed on fresh folds: {prov['metric']} "
              f"{value_with_std(confirmed['confirmed_value'], confirmed['confirmed_std'])} (the search's CV "
              f"{prov['value']:.4f}: winner's curse {confirmed['winners_curse']:+.4f})")
    elif prov.get("lift"):
        print(f"lift over the tuned baseline (trial {prov['baseline']['trial']}) on the search's folds: "
              f"{Lift(**prov['lift']).text()}")
    if prov.get("lift_warning"):
        print(f"warning: {prov['lift_warning']}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from hft_search import describe_trained, load_spec, train_final

    trained = train_final(load_spec(args.spec), args.output, quantize=args.quantize, int8_scheme=args.int8_scheme,
                          ensemble_folds=args.ensemble_folds, tune_threshold_for=args.tune_threshold,
                          force=args.force, storage=args.storage, spec_file=args.spec)
    print(describe_trained(trained))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from hft_search.export import load_exported, verify_spec

    verification = verify_spec(load_exported(args.spec), folds=args.folds)
    print(verification.table())
    return 0 if verification.agrees else 1


def _fold_list(text: str) -> list[int]:
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give fold numbers separated by commas, e.g. 0,1") from None
    if not folds:
        raise argparse.ArgumentTypeError("give at least one fold number, e.g. 0")
    return folds


def _cmd_predict(args: argparse.Namespace) -> int:
    from hft_search import predict_file

    rows = predict_file(args.model, args.input, args.output, int8=args.int8, batch_size=args.batch_size,
                        force=args.force)
    if args.output is None:
        sys.stdout.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hft_search.reports import write_report
    from hft_search.storage import resolve_storage_url

    path = write_report(args.study, resolve_storage_url(args.storage, None), args.output)
    print(f"report written to {path}")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from hft_search.reports import make_server
    from hft_search.storage import resolve_storage_url

    server = make_server(resolve_storage_url(args.storage, None), host=args.host, port=args.port)
    try:
        print(f"dashboard on {server.url} (Ctrl-C to stop)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1 to 65535 (0: any free port)")
    return value


def _add_storage(parser: argparse.ArgumentParser, required_study: bool) -> None:
    parser.add_argument("--storage", help="storage URL: sqlite:///PATH, postgresql+psycopg://..., journal:PATH "
                        "(default: $HFT_SEARCH_STORAGE, then the spec, then sqlite:///hft.db)")
    if required_study:
        parser.add_argument("--study", required=True, help="study name (the spec's `name` unless overridden)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hft-search",
        description="Search the best hybrid fine-tuning configuration (frozen layers, importance masks, "
                    "distillation, LoRA) of a pretrained transformer with Optuna and k-fold cross-validation.",
        epilog="exit status: 0 done; 1 the work ran and failed (every trial failed, a worker failed fast, verify "
               "disagrees, launch short of n_trials); 2 bad input or an unusable place (one error: line, nothing "
               "written); 3 run/worker short of n_trials; 130 interrupted",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a spec; print it resolved, or every problem with its field path")
    p.add_argument("spec", help="study spec (YAML)")
    p.add_argument("--no-model-check", action="store_true",
                   help="skip reading the model's config (layer counts are then not checked)")
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("run", help="run (or resume) a study to n_trials counted trials")
    p.add_argument("spec", help="study spec (YAML)")
    p.add_argument("--n-trials", type=_positive_int,
                   help="total trials wanted in the study (default: study.n_trials)")
    _add_storage(p, required_study=False)
    p.add_argument("--study-name", help="study name (default: the spec's `name`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars even on a terminal")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("worker", help="join (or create) a study and run trials until n_trials count in it; "
                       "start any number, on any machines, on one storage (SIGTERM: stop after this trial)")
    p.add_argument("spec", help="study spec (YAML); every worker of a study uses the same one")
    _add_storage(p, required_study=False)
    p.add_argument("--study-name", help="study name (default: the spec's `name`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument("--threads", type=int, metavar="K", help="torch threads of this worker: its share of the "
                   "machine's cores when several workers share it (default: torch's, all cores)")
    p.set_defaults(handler=_cmd_worker)

    p = sub.add_parser("launch", help="run a study with N workers placed by Ray (a local Ray instance unless "
                       "--address); exit 0 when the study reached n_trials, 1 when not, 130 on Ctrl-C")
    p.add_argument("spec", help="study spec (YAML)")
    p.add_argument("--workers", type=int, required=True, metavar="N", help="workers, i.e. trials at a time")
    p.add_argument("--address", help="Ray cluster: auto (the cluster this machine belongs to) or ray://HOST:PORT "
                   "(default: start a local Ray instance)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="F",
                   help="GPUs each worker reserves; 0.25 packs four trials on a GPU (default 0: CPU)")
    p.add_argument("--cpus-per-worker", type=float, metavar="K", help="CPUs each worker reserves and uses as "
                   "torch threads (default: the cores divided by the workers)")
    _add_storage(p, required_study=False)
    p.add_argument("--study-name", help="study name (default: the spec's `name`)")
    p.set_defaults(handler=_cmd_launch)
    p = sub.add_parser("requeue", help="re-queue the RUNNING trials of workers that died (journal storages have "
                       "no heartbeat to notice); make sure no worker runs them any more")
    _add_storage(p, required_study=True)
    p.add_argument("--older-than", type=_non_negative_float, default=0.0, metavar="SECONDS",
                   help="only trials started at least this long ago (default: every RUNNING trial)")
    p.set_defaults(handler=_cmd_requeue)

    p = sub.add_parser("status", help="table of a study's trials: state, value ± std, trainable %%, params")
    _add_storage(p, required_study=True)
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("best", help="the best trial with its fold scores and provenance")
    _add_storage(p, required_study=True)
    p.add_argument("--trial", type=int, help="report this trial instead (e.g. a Pareto point)")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p.set_defaults(handler=_cmd_best)

    p = sub.add_parser("confirm", help="re-fit the top configurations and the tuned baseline on fresh folds and "
                       "test the winner's lift (corrected resampled t-test); stored in the study")
    _add_storage(p, required_study=True)
    p.add_argument("--top", type=_positive_int, help="distinct configurations (default: study.confirm.top, 3)")
    p.add_argument("--repeats", type=_positive_int, help="fresh k-fold repeats (default: study.confirm.repeats, 1)")
    p.set_defaults(handler=_cmd_confirm)

    p = sub.add_parser("report", help="write a self-contained HTML report (Plotly, opens offline)")
    _add_storage(p, required_study=True)
    p.add_argument("-o", "--output", help="output folder (default: dashboards/STUDY/)")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("dashboard", help="live dashboard of every study in a storage, refreshing as trials finish")
    _add_storage(p, required_study=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080; 0: any free port)")
    p.set_defaults(handler=_cmd_dashboard)

    p = sub.add_parser("export", help="write the best (or a given) trial as a runnable spec with provenance")
    _add_storage(p, required_study=True)
    p.add_argument("-o", "--output", required=True, help="spec file to write (e.g. best.yaml)")
    p.add_argument("--trial", type=int, help="export this trial; required for a multi-objective study "
                   "(the Pareto front is listed when it is missing)")
    p.add_argument("--format", choices=("yaml", "json"), help="default: from the file's suffix, else yaml")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("train", help="fit an exported spec on all training data, evaluate it on the test split, "
                       "save it with save_pretrained")
    p.add_argument("spec", help="spec without search space (written by `hft-search export`)")
    p.add_argument("-o", "--output", required=True, help="model folder to write (e.g. models/NAME)")
    p.add_argument("--quantize", choices=("int8",), help="also save an int8 copy in OUTPUT/int8 and compare "
                   "size, test score and CPU latency")
    p.add_argument("--int8-scheme", choices=("auto", "dynamic", "weight_only"), default="auto",
                   help="dynamic: int8 weights and activations (fast on CPUs with VNNI/AMX); weight_only: int8 "
                   "weights, fp32 matmuls; auto: by this CPU (default)")
    p.add_argument("--ensemble-folds", action="store_true", help="also fit the k fold models and evaluate their "
                   "averaged probabilities on the test split")
    p.add_argument("--tune-threshold", nargs="?", const="f1", metavar="METRIC",
                   help="binary tasks: tune the decision threshold for METRIC (default f1; also accuracy, "
                   "balanced_accuracy, f1_macro, mcc) on out-of-fold probabilities; predict uses it")
    p.add_argument("--storage", help="storage of the study named in the spec's provenance, to record the final "
                   "metrics there (default: the provenance's URL)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("verify", help="re-run an exported spec's recorded folds and compare the scores fold by "
                       "fold (exit 0: they agree; 1: they do not)")
    p.add_argument("spec", help="spec written by `hft-search export`")
    p.add_argument("--folds", type=_fold_list, help="folds to re-run, e.g. 0,1 (default: every recorded fold)")
    p.set_defaults(handler=_cmd_verify)

    p = sub.add_parser("predict", help="labels and probabilities for a csv/tsv/jsonl/parquet file")
    p.add_argument("model", help="model folder written by `hft-search train`")
    p.add_argument("--input", required=True, help="csv, tsv, jsonl or parquet file with the model's text column")
    p.add_argument("--output", help="csv, tsv or jsonl file to write (default: JSON lines on stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--int8", action="store_true", help="use the int8 model (MODEL/int8) on the CPU")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.set_defaults(handler=_cmd_predict)
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("urllib3", "filelock", "datasets", "fsspec", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # transformers imports torchao (when installed) as soon as a model is built, quantizing or not; its
        # warnings about kernels this machine cannot load, and torch's about the enums it registers, say
        # nothing about the user's run. ``--quantize`` imports it again on purpose; -v shows them.
        for noisy in ("torchao", "torch.utils._pytree"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    from hft_search.storage import install_log_masking

    install_log_masking()


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    from optuna.exceptions import StorageInternalError

    from hft_search.exceptions import HFTSearchError
    from hft_search.storage import storage_failure

    try:
        return args.handler(args)
    except HFTSearchError as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_USAGE)  # 1 for a run that failed (ConsecutiveFailures)
    except KeyboardInterrupt:
        print(f"interrupted: {_INTERRUPTED.get(args.command, 'nothing was written')}", file=sys.stderr)
        return 130
    except StorageInternalError as error:  # a storage that failed after it opened (the opening checks it)
        if args.verbose:
            raise
        print(f"error: {storage_failure(error, getattr(args, 'storage', None))}", file=sys.stderr)
        return EXIT_USAGE


_INTERRUPTED = {
    command: "finished trials are stored; run the same command again to continue"
    for command in ("run", "worker", "launch")
}
"""What Ctrl-C leaves behind, by command (others write their output atomically: nothing)."""


if __name__ == "__main__":
    sys.exit(main())
