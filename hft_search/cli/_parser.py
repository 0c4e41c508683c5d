"""The argument parser: every command, its options and help, and the handler each one runs.

Only argparse and the command modules are imported here (those import their stack when run), so that
``hft-search --help`` and a mistyped option answer at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from hft_search.cli._inspect import cmd_dashboard, cmd_report, cmd_validate
from hft_search.cli._model import cmd_export, cmd_predict, cmd_train, cmd_verify
from hft_search.cli._study import (
    cmd_best,
    cmd_confirm,
    cmd_launch,
    cmd_requeue,
    cmd_run,
    cmd_status,
    cmd_worker,
)
from hft_search.cli._types import fold_list, non_negative_float, port, positive_int

Handler = Callable[[argparse.Namespace], int]
"""What each subcommand's ``handler`` default is: the parsed arguments in, the exit status out."""


def _add_storage(parser: argparse.ArgumentParser, required_study: bool) -> None:
    """The storage option every study command shares, and ``--study`` where the command needs one."""
    parser.add_argument("--storage", help="storage URL: sqlite:///PATH, postgresql+psycopg://..., journal:PATH "
                        "(default: $HFT_SEARCH_STORAGE, then the spec, then sqlite:///hft.db)")
    if required_study:
        parser.add_argument("--study", required=True, help="study name (the spec's `name` unless overridden)")


def build_parser() -> argparse.ArgumentParser:
    """The ``hft-search`` parser; tests and the deploy manifests check their commands against it."""
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
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("run", help="run (or resume) a study to n_trials counted trials")
    p.add_argument("spec", help="study spec (YAML)")
    p.add_argument("--n-trials", type=positive_int,
                   help="total trials wanted in the study (default: study.n_trials)")
    _add_storage(p, required_study=False)
    p.add_argument("--study-name", help="study name (default: the spec's `name`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars even on a terminal")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("worker", help="join (or create) a study and run trials until n_trials count in it; "
                       "start any number, on any machines, on one storage (SIGTERM: stop after this trial)")
    p.add_argument("spec", help="study spec (YAML); every worker of a study uses the same one")
    _add_storage(p, required_study=False)
    p.add_argument("--study-name", help="study name (default: the spec's `name`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument("--threads", type=int, metavar="K", help="torch threads of this worker: its share of the "
                   "machine's cores when several workers share it (default: torch's, all cores)")
    p.set_defaults(handler=cmd_worker)

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
    p.set_defaults(handler=cmd_launch)
    p = sub.add_parser("requeue", help="re-queue the RUNNING trials of workers that died (journal storages have "
                       "no heartbeat to notice); make sure no worker runs them any more")
    _add_storage(p, required_study=True)
    p.add_argument("--older-than", type=non_negative_float, default=0.0, metavar="SECONDS",
                   help="only trials started at least this long ago (default: every RUNNING trial)")
    p.set_defaults(handler=cmd_requeue)

    p = sub.add_parser("status", help="table of a study's trials: state, value ± std, trainable %%, params")
    _add_storage(p, required_study=True)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("best", help="the best trial with its fold scores and provenance")
    _add_storage(p, required_study=True)
    p.add_argument("--trial", type=int, help="report this trial instead (e.g. a Pareto point)")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p.set_defaults(handler=cmd_best)

    p = sub.add_parser("confirm", help="re-fit the top configurations and the tuned baseline on fresh folds and "
                       "test the winner's lift (corrected resampled t-test); stored in the study")
    _add_storage(p, required_study=True)
    p.add_argument("--top", type=positive_int, help="distinct configurations (default: study.confirm.top, 3)")
    p.add_argument("--repeats", type=positive_int, help="fresh k-fold repeats (default: study.confirm.repeats, 1)")
    p.set_defaults(handler=cmd_confirm)

    p = sub.add_parser("report", help="write a self-contained HTML report (Plotly, opens offline)")
    _add_storage(p, required_study=True)
    p.add_argument("-o", "--output", help="output folder (default: dashboards/STUDY/)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("dashboard", help="live dashboard of every study in a storage, refreshing as trials finish")
    _add_storage(p, required_study=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8080, help="TCP port (default 8080; 0: any free port)")
    p.set_defaults(handler=cmd_dashboard)

    p = sub.add_parser("export", help="write the best (or a given) trial as a runnable spec with provenance")
    _add_storage(p, required_study=True)
    p.add_argument("-o", "--output", required=True, help="spec file to write (e.g. best.yaml)")
    p.add_argument("--trial", type=int, help="export this trial; required for a multi-objective study "
                   "(the Pareto front is listed when it is missing)")
    p.add_argument("--format", choices=("yaml", "json"), help="default: from the file's suffix, else yaml")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(handler=cmd_export)

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
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("verify", help="re-run an exported spec's recorded folds and compare the scores fold by "
                       "fold (exit 0: they agree; 1: they do not)")
    p.add_argument("spec", help="spec written by `hft-search export`")
    p.add_argument("--folds", type=fold_list, help="folds to re-run, e.g. 0,1 (default: every recorded fold)")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("predict", help="labels and probabilities for a csv/tsv/jsonl/parquet file")
    p.add_argument("model", help="model folder written by `hft-search train`")
    p.add_argument("--input", required=True, help="csv, tsv, jsonl or parquet file with the model's text column")
    p.add_argument("--output", help="csv, tsv or jsonl file to write (default: JSON lines on stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--int8", action="store_true", help="use the int8 model (MODEL/int8) on the CPU")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.set_defaults(handler=cmd_predict)
    return parser
