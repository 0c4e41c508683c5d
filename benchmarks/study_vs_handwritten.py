"""Study-level speed (issue 22): the same study run by hft-search and written by hand with Optuna + ``Trainer``.

(h) is :mod:`benchmarks._handwritten`: what an ML engineer writes today (an Optuna objective looping over
``StratifiedKFold`` with a ``Trainer`` per fold, tokenizing per trial, fine-tuning the teacher inside every
distillation trial, scoring importance inside every importance trial, reporting fold scores to Optuna's
``MedianPruner``). (s) is ``hft_search.run_study`` on a spec that leaves every study option at its installed
default (sampler, pruner, caches) except the extras of :data:`benchmarks._common.EXTRAS` (a baseline sweep, a
confirmation round, a portfolio), which do work (h) does not do: switched off, their cost estimated apart.

Three runs, each side in a fresh process of its own (no model, tokenizer or cache carried over):

1. **Enqueued**: both sides get the same :func:`configurations` (full fine-tunes, frozen blocks, importance cuts,
   3-block distillation students, LoRA), on the same rows, folds, fold seeds, epochs and batch size. Reported:
   the study's wall time (s)/(h) (target <= :data:`TARGET_RATIO`), fold-epochs trained, teacher fits, the time
   in tokenization, model loading, teacher fits and importance scoring, and the CV of every configuration on
   both sides over the folds both finished (a pruned trial has fewer), and fold 0's score after one epoch,
   which every trial reaches.
2. **Seed noise**: (h) again on :attr:`Sizes.noise_configs` of those configurations with other training seeds
   (same folds, no pruning), so that the (s)-(h) differences of run 1 have a scale to be judged against.
3. **Sampled**: each side's own sampler and pruner choose ``sampled_trials`` configurations from :data:`SPACE`
   (same budget of trials); the anytime curves (best CV so far against wall time) go to the JSON and
   ``study_vs_handwritten_<preset>.html``.

    python -m benchmarks study_vs_handwritten                  # full sizes: about 40 min on 2 idle cores (estimate)
    python -m benchmarks study_vs_handwritten --sizes smoke --model TINY --train CSV --dev CSV
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _anytime as anytime
from benchmarks._common import (
    ROOT,
    Context,
    FoldSizes,
    check,
    quiet_libraries,
    spec_yaml,
    study_without_extras,
    trial_seconds,
    write_json,
)

TARGET_RATIO = 0.6
"""(s)/(h) study wall time the service should reach on 2 idle cores (issue 22)."""
NOISE_FACTOR = 2.0
"""Per-configuration CV agreement: mean |(s) - (h)| at most this many times the seed noise of (h)."""
MAX_OFFSET = 0.02
"""Per-configuration CV agreement: a systematic (s) - (h) offset above this means the two run different things."""
SIDE_TIMEOUT_S = 3 * 3600
"""A side that runs longer than this is stuck (the full sizes take well under an hour per side)."""
LEARNS_MARGIN = 0.10
"""The full fine-tune's CV must beat the majority-class share by this much: the benchmark runs where MiniLM learns."""

SPACE: dict[str, dict[str, Any]] = {
    "training.learning_rate": {"float": [2.0e-5, 5.0e-4], "log": True},
    "freeze.enabled": {"categorical": [True, False]},
    "freeze.layers": {"int": [1, 6]},
    "importance.enabled": {"categorical": [True, False]},
    "importance.threshold": {"float": [0.3, 0.9]},
    "distill.enabled": {"categorical": [True, False]},
    "distill.alpha": {"float": [0.2, 0.9]},
    "distill.temperature": {"float": [1.0, 4.0]},
    "distill.student_layers": {"int": [2, 6]},
    "lora.enabled": {"categorical": [True, False]},
    "lora.r": {"int": [4, 16], "log": True},
}
"""The searched space, in hft_search's notation (block counts are capped at the model's depth)."""


@dataclass(frozen=True)
class Sizes(FoldSizes):
    batch_size: int
    sampled_trials: int  # run 3: trials per side
    noise_configs: int  # run 2: configurations (h) fits again with another training seed


SIZES = {
    "full": Sizes(rows=600, folds=3, max_length=48, epochs=2, batch_size=16, sampled_trials=10, noise_configs=3),
    "quick": Sizes(rows=200, folds=3, max_length=32, epochs=1, batch_size=16, sampled_trials=5, noise_configs=2),
    "smoke": Sizes(rows=48, folds=2, max_length=16, epochs=1, batch_size=16, sampled_trials=3, noise_configs=1),
}


def configurations(num_layers: int) -> list[dict[str, Any]]:
    """The enqueued configurations (dotted knob: value), every group's switch given; for MiniLM's 6 blocks:
    2 full fine-tunes, 3 frozen bottoms, 3 importance cuts, 3 distillations into a 3-block student, 2 LoRA."""
    half, student = max(1, num_layers // 2), min(3, num_layers - 1)

    def config(lr: float, **on: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {"training.learning_rate": lr}
        for group in ("freeze", "importance", "distill", "lora"):
            values[f"{group}.enabled"] = group in on
            values.update({f"{group}.{knob}": value for knob, value in on.get(group, {}).items()})
        return values

    return [
        config(5e-5), config(1e-4),
        config(1e-4, freeze={"layers": 1}), config(1e-4, freeze={"layers": half}),
        config(1e-4, freeze={"layers": num_layers}),
        config(1e-4, importance={"threshold": 0.5}), config(1e-4, importance={"threshold": 0.8}),
        config(1e-4, freeze={"layers": 1}, importance={"threshold": 0.5}),
        config(1e-4, distill={"alpha": 0.5, "temperature": 2.0, "student_layers": student}),
        config(1e-4, distill={"alpha": 0.8, "temperature": 4.0, "student_layers": student}),
        config(1e-4, freeze={"layers": 1}, distill={"alpha": 0.5, "temperature": 2.0, "student_layers": student}),
        config(1e-4, lora={"r": 8}), config(2e-4, lora={"r": 16}),
    ]


NOISE_ORDER = (1, 3, 11, 5)
"""Configurations fitted again for the seed noise, the first ``noise_configs`` of: a full fine-tune, a frozen
half, LoRA, an importance cut."""


def space_for(num_layers: int) -> dict[str, dict[str, Any]]:
    """:data:`SPACE` with block counts capped at the model's depth (the tiny test model has fewer blocks)."""
    capped = dict(SPACE)
    for name in ("freeze.layers", "distill.student_layers"):
        low, high = SPACE[name]["int"]
        capped[name] = {"int": [min(low, num_layers - 1), min(high, num_layers)]}
    return capped


# -- what the installed spec lets us switch off ------------------------------------------------------------


def switched_off() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """:func:`~benchmarks._common.study_without_extras`, and the model options that make (s) train the network
    (h) trains, as far as the installed spec has them; a note per choice."""
    from hft_search.spec import ModelSpec

    study, notes = study_without_extras()
    model: dict[str, Any] = {}
    if "pooling" in ModelSpec.model_fields:
        model["pooling"] = "cls"
        notes.append("model.pooling: cls, the head AutoModelForSequenceClassification trains, as (h) does")
    return study, model, notes


# -- the two sides, each in a process of its own -------------------------------------------------------------


def side_main(argv: Sequence[str]) -> int:
    """``study_vs_handwritten _side JOB.json OUT.json``: run one side's study and write what it measured."""
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    import torch

    torch.set_num_threads(job["threads"])
    quiet_libraries()
    import datasets  # noqa: F401 - imported before the clock starts, on both sides alike
    import peft  # noqa: F401
    import transformers.trainer  # noqa: F401

    import hft_search.objective  # noqa: F401

    result = run_handwritten(job) if job["side"] == "h" else run_service(job)
    write_json(Path(argv[1]), result)
    return 0


def run_handwritten(job: dict[str, Any]) -> dict[str, Any]:
    import optuna

    from benchmarks._handwritten import HandwrittenObjective, Settings, Stopwatch

    watch = Stopwatch()
    start, origin = time.perf_counter(), time.time()
    objective = HandwrittenObjective(Settings(**job["settings"]), watch)
    pruner = optuna.pruners.MedianPruner() if job["prune"] else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=job["sampler_seed"]))
    for params in job["enqueue"]:
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=job["n_trials"])
    return summarize(study, time.perf_counter() - start, origin, watch.report(), job["epochs"])


HFT_PARTS = {"load_data": "reading the data", "load_base": "model loading", "load_tokenizer": "tokenization",
             "tokenize": "tokenization", "fit_teacher": "teacher fits", "compute_importance": "importance scoring"}
"""Functions the cross-validator calls (``hft_search.cv``'s names), timed on (s) as (h) times the same parts."""
TEACHER_ALL = "teacher: fits, predictions and cache"
"""``CrossValidator._teacher`` as a whole; what it spends beyond ``fit_teacher`` is reported as teacher
predictions (the teacher's outputs on the fold, its validation score, the cache)."""


def run_service(job: dict[str, Any]) -> dict[str, Any]:
    import hft_search.cv
    from benchmarks._handwritten import Stopwatch
    from hft_search import load_spec, run_study
    from hft_search.spec import knob_default

    watch = Stopwatch()
    missing = [name for name in HFT_PARTS if not callable(getattr(hft_search.cv, name, None))]
    for name, part in HFT_PARTS.items():
        if name not in missing:
            setattr(hft_search.cv, name, timed(getattr(hft_search.cv, name), part, watch))
    validator = hft_search.cv.CrossValidator
    validator._teacher = timed(validator._teacher, TEACHER_ALL, watch)
    spec = load_spec(job["spec"])
    start, origin = time.perf_counter(), time.time()
    study = run_study(spec)
    seconds = watch.seconds
    seconds["teacher predictions"] = seconds.pop(TEACHER_ALL, 0.0) - seconds.get("teacher fits", 0.0)
    watch.calls["teacher predictions"] = watch.calls.pop(TEACHER_ALL, 0)
    result = summarize(study, time.perf_counter() - start, origin, watch.report(), job["epochs"])
    teacher_epochs = spec.fixed.get("distill.teacher_epochs", knob_default("distill.teacher_epochs"))
    result.update(teacher_fits=watch.calls.get("teacher fits", 0),
                  teacher_epochs=watch.calls.get("teacher fits", 0) * teacher_epochs,
                  not_timed=[f"hft_search.cv.{name}" for name in missing])
    return result


def timed(function: Callable[..., Any], part: str, watch: Any) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with watch(part):
            return function(*args, **kwargs)

    return wrapper


def summarize(study: Any, wall: float, origin: float, parts: dict[str, Any], epochs: int) -> dict[str, Any]:
    """A side's study as plain data: wall time, parts, and every trial's configuration and fold scores."""
    trials = [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
               "fold_scores": t.user_attrs.get("fold_scores") or [], "fold_epochs": anytime.fold_epochs(t, 0),
               "first_fold_epoch": first_fold_epoch(t),
               "teacher_epochs": t.user_attrs.get("teacher_epochs"),
               "seconds": trial_seconds(t)}
              for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    return {"wall_s": wall, "parts": parts, "trials": trials, "curve": anytime.curve(study, origin, epochs),
            "fold_epochs": sum(t["fold_epochs"] for t in trials),
            "teacher_epochs": sum(t["teacher_epochs"] or 0 for t in trials),
            "teacher_fits": parts["calls"].get("teacher fits", 0),
            "pruned": sum(t["state"] == "PRUNED" for t in trials)}


def first_fold_epoch(trial: Any) -> float | None:
    """Fold 0's validation score after its first epoch: (h) records every epoch's score (``epoch_scores``);
    (s) reports it as step 1 (fold 0, epoch 1) of its per-epoch pruning, when its pruner is a per-epoch one."""
    scores = trial.user_attrs.get("epoch_scores")
    if scores is not None:
        return scores[0][0] if scores and scores[0] else None
    return trial.intermediate_values.get(1)


class Bench:
    """One run of the benchmark: its sizes, scratch folder, the rows both sides fine-tune on, and the jobs."""

    def __init__(self, ctx: Context) -> None:
        import torch

        from hft_search.models import load_config, num_layers_in_config, resolve_source

        self.ctx = ctx
        self.sizes: Sizes = ctx.sizes(SIZES)
        self.folder = ctx.folder("study_vs_handwritten")
        self.model_dir = resolve_source(ctx.model)
        self.num_layers = num_layers_in_config(load_config(ctx.model))
        self.space = space_for(self.num_layers)
        self.threads = torch.get_num_threads()
        self.rows_file, self.majority = self.write_rows()
        self.study_options, self.model_options, self.notes = switched_off()

    def write_rows(self) -> tuple[Path, float]:
        """hft_search's stratified subsample of the training file, written once for both sides (integer labels),
        and checked to read back identically through ``datasets`` (what (h) reads it with)."""
        import datasets

        from hft_search.data import load_data
        from hft_search.spec import DataSpec

        data = load_data(DataSpec(train=str(self.ctx.train), max_train_samples=self.sizes.rows))
        path = self.folder / "rows.tsv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(["text", "label"])
            writer.writerows(zip(data.train.texts, data.train.labels.tolist(), strict=True))
        back = datasets.load_dataset("csv", data_files=str(path), delimiter="\t", split="train")
        if back["text"] != list(data.train.texts) or back["label"] != data.train.labels.tolist():
            raise RuntimeError(f"{path} does not read back as written: the two sides would see other rows")
        counts = np.bincount(data.train.labels)
        return path, float(counts.max() / counts.sum())

    def side(self, name: str, job: dict[str, Any]) -> dict[str, Any]:
        """Run one side in a fresh process; its measurements."""
        job_file, out = self.folder / f"{name}.job.json", self.folder / f"{name}.out.json"
        write_json(job_file, {**job, "threads": self.threads, "epochs": self.sizes.epochs})
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        done = subprocess.run([sys.executable, "-m", "benchmarks.study_vs_handwritten", "_side", str(job_file),
                               str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=SIDE_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"side {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(out.read_text(encoding="utf-8"))
        print(f"  {name}: {result['wall_s']:.0f} s, {len(result['trials'])} trials ({result['pruned']} pruned), "
              f"{result['fold_epochs']} fold-epochs, {result['teacher_fits']} teacher fits; "
              + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in sorted(result["parts"]["seconds"].items())),
              flush=True)
        return result

    def handwritten(self, name: str, *, enqueue: list[dict[str, Any]], n_trials: int, prune: bool = True,
                    training_seed: int = 0) -> dict[str, Any]:
        from benchmarks._handwritten import Settings

        s = self.sizes
        settings = Settings(model_dir=self.model_dir, rows_file=str(self.rows_file), output_dir=str(self.folder
                            / f"{name}-trainer"), space=self.space, folds=s.folds, max_length=s.max_length,
                            epochs=s.epochs, batch_size=s.batch_size, training_seed=training_seed)
        return self.side(name, {"side": "h", "settings": asdict(settings), "enqueue": enqueue,
                                "n_trials": n_trials, "prune": prune, "sampler_seed": 0})

    def service(self, name: str, *, enqueue: list[dict[str, Any]], n_trials: int) -> dict[str, Any]:
        from hft_search.spec import StudyOptions

        spec = service_spec(name, self.folder, rows_file=self.rows_file, model=self.ctx.model, sizes=self.sizes,
                            space=self.space, enqueue=enqueue, n_trials=n_trials,
                            study_options=self.study_options, model_options=self.model_options)
        spec_file = self.folder / f"{name}.yaml"
        spec_file.write_text(spec_yaml(spec), encoding="utf-8")
        defaults = {key: StudyOptions.model_fields[key].default for key in ("sampler", "pruner")}
        return {**self.side(name, {"side": "s", "spec": str(spec_file)}), "study_defaults": defaults}


def service_spec(name: str, folder: Path, *, rows_file: Path, model: str, sizes: Sizes,
                 space: dict[str, dict[str, Any]], enqueue: list[dict[str, Any]], n_trials: int,
                 study_options: dict[str, Any], model_options: dict[str, Any]) -> Any:
    """(s)'s spec: the shared rows, folds, epochs and batch size; every other option at its installed default
    but for ``study_options`` and ``model_options`` (:func:`switched_off`); storage and cache in ``folder``."""
    from hft_search.spec import spec_from_dict

    return spec_from_dict({
        "name": name,
        "data": {"train": str(rows_file), "text_column": "text", "label_column": "label"},
        "model": {"name": model, "max_length": sizes.max_length, **model_options},
        "cv": {"folds": sizes.folds, "seed": 0, "metric": "accuracy"},
        "search_space": space,
        "fixed": {"training.epochs": sizes.epochs, "training.batch_size": sizes.batch_size},
        "study": {"n_trials": n_trials, "storage": f"sqlite:///{folder / (name + '.db')}", "enqueue": enqueue,
                  "seed": 0, **study_options},
        "device": "cpu",
        "cache_dir": str(folder / f"{name}-cache"),  # its own: nothing warm from another run
    })


# -- the benchmark -------------------------------------------------------------------------------------------


def run(ctx: Context) -> dict[str, Any]:
    bench = Bench(ctx)
    sizes = bench.sizes
    configs = configurations(bench.num_layers)
    print(f"study vs hand-written: {sizes.rows} rows, {sizes.folds} folds, max_length {sizes.max_length}, "
          f"{sizes.epochs} epoch(s), {len(configs)} enqueued configurations, {sizes.sampled_trials} sampled "
          f"trials per side, {bench.threads} torch thread(s)", flush=True)
    for note in bench.notes:
        print(f"  {note}")
    enqueued = {"h": bench.handwritten("h-enqueued", enqueue=configs, n_trials=len(configs)),
                "s": bench.service("s-enqueued", enqueue=configs, n_trials=len(configs))}
    chosen = [configs[i] for i in NOISE_ORDER if i < len(configs)][:sizes.noise_configs]
    noise = bench.handwritten("h-seed-1", enqueue=chosen, n_trials=len(chosen), prune=False, training_seed=1)
    sampled = {"s": bench.service("s-sampled", enqueue=[], n_trials=sizes.sampled_trials),  # (s) first this time
               "h": bench.handwritten("h-sampled", enqueue=[], n_trials=sizes.sampled_trials)}
    agreement = compare_sides(enqueued["h"]["trials"], enqueued["s"]["trials"], configs)
    seed_noise = compare_sides(enqueued["h"]["trials"], noise["trials"], chosen)
    figure = anytime.figure({f"({side}) {label}": [{"seed": 0, "curve": sampled[side]["curve"]}]
                             for side, label in (("s", "hft-search"), ("h", "hand-written"))},
                            f"Study vs hand-written on SST-2 ({ctx.preset} sizes): best CV so far",
                            ctx.results_dir / f"study_vs_handwritten_{ctx.preset}.html")
    extras = extras_estimate(bench.study_options, enqueued, configs)
    result = {"sizes": sizes, "space": bench.space, "configurations": configs, "switched": bench.notes,
              "extras_estimate": extras, "majority_share": bench.majority, "threads": bench.threads,
              "enqueued": enqueued, "seed_noise_run": noise, "sampled": sampled, "agreement": agreement,
              "seed_noise": seed_noise, "breakdown": breakdown(enqueued), "figure": figure.name}
    ratio = result["breakdown"]["ratio"]
    print(f"  (s)/(h): wall {ratio['wall']:.2f} = fold-epochs {ratio['fold_epochs']:.2f} x seconds per fold-epoch "
          f"{ratio['seconds_per_fold_epoch']:.2f}", flush=True)
    result["targets"] = targets(result)
    return result


def compare_sides(first: list[dict[str, Any]], second: list[dict[str, Any]],
                  configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration, the CV of both runs over the folds both finished, and their paired comparison
    (``second - first``; a t-test across configurations for a systematic offset). Also, under
    ``first_fold_epoch``, the same for fold 0's score after its first epoch, which every trial reaches: it
    compares the configurations that a pruner stopped before they finished a fold."""

    def by_config(trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {canonical(t["params"]): t for t in trials}

    ones, twos = by_config(first), by_config(second)
    rows, early = [], []
    for index, config in enumerate(configs):
        a, b = ones.get(canonical(config)), twos.get(canonical(config))
        if a is None or b is None:
            raise RuntimeError(f"configuration {index} ran on one side only: {config}")
        folds = min(len(a["fold_scores"]), len(b["fold_scores"]))
        row = {"config": index, "folds": folds, "states": [a["state"], b["state"]]}
        if folds:
            row.update(first=float(np.mean(a["fold_scores"][:folds])), second=float(np.mean(b["fold_scores"][:folds])))
            row["diff"] = row["second"] - row["first"]
        rows.append(row)
        if a.get("first_fold_epoch") is not None and b.get("first_fold_epoch") is not None:
            early.append(b["first_fold_epoch"] - a["first_fold_epoch"])
    diffs = [row["diff"] for row in rows if "diff" in row]
    return {"per_config": rows, **paired(diffs), "skipped": len(rows) - len(diffs), "first_fold_epoch": paired(early)}


def paired(diffs: list[float]) -> dict[str, Any]:
    """How many differences, their mean, mean and largest absolute value, how many are positive, and the
    one-sample t-test of a zero mean (with two or more that differ)."""
    from scipy import stats

    summary: dict[str, Any] = {"compared": len(diffs)}
    if diffs:
        summary.update(mean_diff=float(np.mean(diffs)), mean_abs_diff=float(np.mean(np.abs(diffs))),
                       max_abs_diff=float(np.max(np.abs(diffs))), second_higher=sum(d > 0 for d in diffs))
    if len(diffs) >= 2 and np.std(diffs) > 0:
        test = stats.ttest_1samp(diffs, 0.0)
        summary.update(t_statistic=float(test.statistic), p_value=float(test.pvalue))
    return summary


def canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def breakdown(enqueued: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run 1 side by side: wall time, fold-epochs, teacher fits and epochs, seconds per part; and the wall-time
    ratio split into less work (fold-epochs) and faster work (seconds per fold-epoch, which takes in the teacher
    fits, importance scoring and tokenization done once instead of per trial)."""
    parts = sorted({part for side in enqueued.values() for part in side["parts"]["seconds"]})
    sides = {side: {"wall_s": run_["wall_s"], "fold_epochs": run_["fold_epochs"], "pruned": run_["pruned"],
                    "teacher_fits": run_["teacher_fits"], "teacher_epochs": run_["teacher_epochs"],
                    "seconds_per_fold_epoch": run_["wall_s"] / max(1, run_["fold_epochs"]),
                    "seconds": {part: run_["parts"]["seconds"].get(part, 0.0) for part in parts},
                    "calls": {part: run_["parts"]["calls"].get(part, 0) for part in parts}}
             for side, run_ in enqueued.items()}
    h, s = sides["h"], sides["s"]
    return {**sides, "ratio": {"wall": s["wall_s"] / h["wall_s"],
                               "fold_epochs": s["fold_epochs"] / max(1, h["fold_epochs"]),
                               "seconds_per_fold_epoch": s["seconds_per_fold_epoch"] / h["seconds_per_fold_epoch"]}}


def full_fine_tune(trials: list[dict[str, Any]], configs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial of the second enqueued configuration (a full fine-tune at 1e-4), when it completed."""
    found = next((t for t in trials if canonical(t["params"]) == canonical(configs[1])), None)
    return found if found is not None and found["state"] == "COMPLETE" else None


def extras_estimate(options: dict[str, Any], enqueued: dict[str, dict[str, Any]], configs: list[dict[str, Any]]
                    ) -> dict[str, Any]:
    """What the switched-off extras would have cost (they did not run): each is one or more CV fits of a full
    fine-tune, timed here by (s)'s full fine-tune trial, else by (h)'s (an upper bound; (h)'s configuration 1 is
    within MedianPruner's start-up trials, so it always completes)."""
    ours, theirs = (full_fine_tune(enqueued[side]["trials"], configs) for side in ("s", "h"))
    timed_by = ours or theirs
    return {"switched_off": sorted(options), "full_fine_tune_trial_s": timed_by and timed_by["seconds"],
            "timed_on": "s" if ours else "h",
            "how": "a baseline or confirmation fit costs about one full fine-tune CV trial, a portfolio entry one "
                   "trial; none of them ran here, so none is in either side's time"}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    enqueued, agreement, noise = result["enqueued"], result["agreement"], result["seed_noise"]
    h, s = enqueued["h"], enqueued["s"]
    found = [check(f"study wall time, hft-search / hand-written Optuna + Trainer ({len(result['configurations'])} "
                   "enqueued configurations)", s["wall_s"] / h["wall_s"], TARGET_RATIO,
                   detail=f"{s['wall_s']:.0f} s vs {h['wall_s']:.0f} s; fold-epochs {s['fold_epochs']} vs "
                   f"{h['fold_epochs']}, teacher fits {s['teacher_fits']} vs {h['teacher_fits']}, pruned "
                   f"{s['pruned']} vs {h['pruned']}")]
    offset = agreement.get("mean_diff")
    early = agreement["first_fold_epoch"]
    found.append(check("per-configuration CV, systematic offset |mean (s) - (h)|", None if offset is None
                       else abs(offset), MAX_OFFSET, detail=f"{agreement['compared']} configurations over the folds "
                       f"both finished, paired t-test p = {agreement.get('p_value', math.nan):.3g}; fold 0 after "
                       f"one epoch: {early['compared']} configurations, mean (s) - (h) "
                       f"{early.get('mean_diff', math.nan):+.4f}, p = {early.get('p_value', math.nan):.3g}"))
    spread, scale = agreement.get("mean_abs_diff"), noise.get("mean_abs_diff")
    ratio = None if spread is None or not scale else spread / scale
    found.append(check("per-configuration CV, mean |(s) - (h)| / mean |(h) seed 0 - (h) seed 1|", ratio, NOISE_FACTOR,
                       detail=f"{spread if spread is not None else math.nan:.4f} vs seed noise "
                       f"{scale if scale is not None else math.nan:.4f} over {noise['compared']} configurations"))
    full = {side: full_fine_tune(run_["trials"], result["configurations"]) for side, run_ in (("h", h), ("s", s))}
    margins = {side: float(np.mean(t["fold_scores"])) - result["majority_share"] for side, t in full.items() if t}
    found.append(check("full fine-tune CV - majority-class share (the model learns), worse side",
                       min(margins.values(), default=None), LEARNS_MARGIN, at_most=False,
                       detail=f"majority {result['majority_share']:.3f}; side(s) where it completed: "
                       f"{', '.join(sorted(margins)) or 'none'}"))
    sampled = result["sampled"]
    share = anytime.share_to_reach(sampled["s"]["curve"], sampled["h"]["curve"])
    found.append(check("own samplers: hft-search's time to hand-written's final best CV / hand-written's wall time",
                       share, 1.0, detail=f"{len(sampled['s']['trials'])} vs {len(sampled['h']['trials'])} trials, "
                       f"best CV {sampled['s']['curve'][-1]['best_so_far']:.4f} vs "
                       f"{sampled['h']['curve'][-1]['best_so_far']:.4f} in {sampled['s']['wall_s']:.0f} vs "
                       f"{sampled['h']['wall_s']:.0f} s; one sampler seed: luck matters"))
    return found


if __name__ == "__main__":
    if sys.argv[1:2] == ["_side"]:
        sys.exit(side_main(sys.argv[2:]))
    sys.exit("run it through the suite: python -m benchmarks study_vs_handwritten")
