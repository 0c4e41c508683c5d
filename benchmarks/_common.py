"""What every benchmark shares: the run context, machine facts, targets, specs, timed trials, JSON files.

A benchmark module exposes ``SIZES`` (one :class:`dataclass` per preset: ``full``, ``quick``, ``smoke``) and
``run(ctx) -> dict``. The dict holds what it measured, the ``sizes`` it used, and a ``targets`` list made by
:func:`compare` or :func:`check`: ``{name, value, target, comparison, met, detail}``. The runner
(``python -m benchmarks``) adds the machine facts and the duration and writes ``results/<name>.json``.

Why every figure comes with its baseline from the same run: on a shared machine absolute seconds move with
the load, while a ratio of two things measured side by side (and alternated) mostly does not.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel as PydanticModel
from transformers import get_linear_schedule_with_warmup

from hft_search.data import TokenizedSplit
from hft_search.models import BaseModel
from hft_search.spec import StudySpec, TrainingConfig, spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SST2_DIR = ROOT.parent / "shared" / "datasets" / "sst2"
"""GLUE SST-2 (``text``, ``label`` tsv), referenced as ``../shared/datasets/sst2/`` from the repository."""
PRESETS = ("full", "quick", "smoke", "cpu", "gpu")
"""``full``: the published figures (the whole suite < 1 h on 2 idle cores); ``quick``: every benchmark in a few
minutes; ``smoke``: the smallest sizes that still run every code path (CI, with a tiny model). ``cpu`` and
``gpu``: one benchmark's own sizes for that machine, where it has them (``search_quality``)."""


@dataclass(frozen=True)
class FoldSizes:
    """What the sizes of a cross-validating benchmark start with; a benchmark's ``Sizes`` adds its own fields."""

    rows: int  # training rows
    folds: int
    max_length: int
    epochs: int  # per fold


@dataclass(frozen=True)
class Context:
    """What a benchmark run was asked for: size preset, model, data, where to write and to work."""

    preset: str
    model: str  # "minilm" or a save_pretrained folder
    train: Path  # a text/label file (csv, tsv, ...)
    dev: Path  # held-out file scored by search_quality
    results_dir: Path
    work_dir: Path  # scratch space (studies, caches, checkpoints), removed after the run unless kept
    postgres: str | None
    seeds: tuple[int, ...] | None = None  # replaces the preset's seeds, for benchmarks that repeat over seeds
    resume: bool = False  # work_dir is kept between runs: a benchmark's folder may hold an earlier run's studies

    def sizes(self, presets: Mapping[str, Any]) -> Any:
        """The preset's sizes, with ``seeds`` replaced when the run asked for other seeds and the sizes have any."""
        if self.preset not in presets:
            raise SystemExit(f"this benchmark has no {self.preset!r} sizes; choose one of {', '.join(presets)}")
        sizes = presets[self.preset]
        if self.seeds is not None and is_dataclass(sizes) and "seeds" in {f.name for f in fields(sizes)}:
            sizes = replace(sizes, seeds=self.seeds)
        return sizes

    def folder(self, name: str) -> Path:
        """A scratch folder for one benchmark (its own caches: nothing warm from another benchmark); fresh, except
        in a kept work folder, where a re-run finds the studies and caches of the run it resumes."""
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=self.resume)
        return path


# -- machine facts and result files ------------------------------------------------------------------------


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The facts a figure depends on: cores, threads, load, package versions, and the device's name."""
    device = torch.device(device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    return {"device": device.type, "device_name": name, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
            "python": platform.python_version(), "torch": torch.__version__,
            **{package: package_version(package) for package in ("transformers", "optuna", "peft", "hft_search")}}


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False, encoding="utf-8") as handle:
        json.dump(jsonable(data), handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)


def merge_json(path: Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Update the top-level keys of the JSON object in ``path`` (created if missing); returns the merge."""
    merged = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    merged.update(updates)
    write_json(path, merged)
    return merged


def jsonable(value: Any) -> Any:
    """Dataclasses as dicts, paths as strings, non-finite floats as ``None`` (JSON has no inf or nan)."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def quiet_libraries() -> None:
    """No progress bars or per-trial INFO lines from the libraries: the benchmarks print what they measured."""
    import datasets
    import optuna
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # peft's LoRA asks transformers 5 a deprecated question on every adapter it adds
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


# -- targets: a figure, its limit, and whether it was met ---------------------------------------------------


def check(name: str, value: float | None, limit: float, *, at_most: bool = True, detail: str = "",
          unit: str = "") -> dict[str, Any]:
    """Record (and print) one target; a missing or non-finite value does not meet it."""
    met = value is not None and math.isfinite(value) and (value <= limit if at_most else value >= limit)
    comparison = "<=" if at_most else ">="
    shown = "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}{unit}"
    print(f"  {name}: {shown}  (target {comparison} {limit:g}{unit}: {'met' if met else 'NOT met'})"
          + (f"  [{detail}]" if detail else ""), flush=True)
    return {"name": name, "value": value, "target": limit, "comparison": comparison, "met": bool(met),
            "detail": detail}


def compare(name: str, ours: float, baseline: float, baseline_label: str, limit: float, *,
            unit: str = "s", ours_label: str = "hft_search") -> dict[str, Any]:
    """Print a figure and its baseline side by side and check their ratio (``ours / baseline``) against
    ``limit``."""
    ratio = ours / baseline if baseline > 0 else math.inf
    detail = f"{ours_label} {ours:.3g} {unit} vs {baseline_label} {baseline:.3g} {unit}"
    return {**check(name, ratio, limit, detail=detail), "ours": ours, "baseline": baseline,
            "baseline_label": baseline_label, "unit": unit}


# -- specs and trials ---------------------------------------------------------------------------------------


def bench_spec(ctx: Context, name: str, folder: Path, *, rows: int, max_length: int, folds: int,
               fixed: Mapping[str, Any], search_space: Mapping[str, Any] | None = None,
               study: Mapping[str, Any] | None = None, device: str = "cpu", test: bool = False,
               test_rows: int | None = None) -> StudySpec:
    """A study spec on the run's model and data, its SQLite storage and cache inside ``folder``."""
    data: dict[str, Any] = {"train": str(ctx.train), "text_column": "text", "label_column": "label",
                            "max_train_samples": rows}
    if test:
        data.update(test=str(ctx.dev), max_test_samples=test_rows)
    return spec_from_dict({
        "name": name,
        "data": data,
        "model": {"name": ctx.model, "max_length": max_length},
        "cv": {"folds": folds, "seed": 0, "metric": "accuracy"},
        "search_space": dict(search_space or {}),
        "fixed": dict(fixed),
        "study": {"n_trials": 1, "pruner": "none", "storage": f"sqlite:///{folder / 'studies.db'}",
                  **(study or {})},
        "device": device,
        "cache_dir": str(folder / "cache"),
    })


EXTRAS: dict[str, str] = {
    "baseline": "the learning-rate sweep of baseline full fine-tunes a study starts with (outside n_trials)",
    "confirm": "the confirmation round that re-fits the top configurations on fresh folds after the search",
    "portfolio": "the literature portfolio of configurations enqueued before the search",
}
"""Study options that add fits beyond the trials a benchmark asks for (issues 19 and 20)."""


def study_without_extras() -> tuple[dict[str, Any], list[str]]:
    """``study`` options that switch :data:`EXTRAS` off, as far as the installed spec has them, and a note per
    extra. Values are tried in order (``false``, then ``"none"``) and the first the spec accepts is kept, so a
    benchmark follows the spec as it changes; an extra that cannot be switched off is said so."""
    from pydantic import ValidationError

    from hft_search.spec import StudyOptions

    options: dict[str, Any] = {}
    notes = []
    for field, what in EXTRAS.items():
        if field not in StudyOptions.model_fields:
            notes.append(f"study.{field}: not in the installed spec (nothing to switch off)")
            continue
        for value in (False, "none"):
            try:
                StudyOptions.model_validate({field: value})
            except ValidationError:
                continue
            options[field] = value
            notes.append(f"study.{field}: {json.dumps(value)}, switched off: {what}")
            break
        else:
            notes.append(f"study.{field}: could not be switched off (neither false nor 'none' is accepted): "
                         f"{what} runs and is counted in the measured time")
    return options, notes


def spec_yaml(spec: StudySpec) -> str:
    """``spec`` as a runnable YAML file that loads back to the same spec.

    ``StudySpec.to_yaml`` leaves out every None, and a None that switches a default off (``study.portfolio``)
    would switch it back on when the file is loaded; such fields are written out as ``null``.
    """
    body = yaml.safe_load(spec.to_yaml())
    for name in type(spec).model_fields:
        section = getattr(spec, name)
        if not isinstance(section, PydanticModel):
            continue
        for field, info in type(section).model_fields.items():
            if getattr(section, field) is None and info.default is not None:
                body.setdefault(name, {})[field] = None
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def trial_seconds(trial: Any) -> float:
    """Wall time of a finished Optuna trial, from its own timestamps."""
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def span_s(trials: Iterable[Any]) -> float:
    """Seconds from the earliest start to the latest completion of the trials that finished.

    A study's throughput window: worker start-up (and Ray's) stays outside it, and trials that ran side by side
    count once, which a sum of :func:`trial_seconds` would not."""
    finished = [t for t in trials if t.datetime_complete is not None]
    if not finished:
        raise ValueError("no finished trial to time")
    return (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()


def timed_trial(study: Any, objective: Any) -> tuple[Any, float]:
    """Run one more trial of ``study`` through the worker loop; the trial and the loop's wall time."""
    from hft_search.workers import optimize

    before = len(study.get_trials(deepcopy=False))
    start = time.perf_counter()
    optimize(study, objective, before + 1)
    seconds = time.perf_counter() - start
    return study.get_trials(deepcopy=False)[-1], seconds


# -- the hand-written PyTorch loop that our engine is measured against --------------------------------------


def bare_fine_tune(base: BaseModel, train: TokenizedSplit, valid: TokenizedSplit | None,
                   training: TrainingConfig, device: torch.device, seed: int = 0) -> float:
    """A full fine-tune written as a user would write it in plain PyTorch, doing what ``fine_tune`` does:
    AdamW, linear warm-up and decay, clipping, autocast on CUDA; with ``valid``, an evaluation after every
    epoch, early stopping and the best epoch's weights restored. Nothing of our engine is used beyond the
    batches of a :class:`TokenizedSplit`. Returns the best validation accuracy (nan without ``valid``)."""
    model = base.fresh(seed).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.learning_rate,
                                  weight_decay=training.weight_decay, fused=device.type in ("cpu", "cuda"))
    steps = training.epochs * math.ceil(len(train) / training.batch_size)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(training.warmup_ratio * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    best_score, best_state, bad_epochs = -math.inf, None, 0
    for epoch in range(1, training.epochs + 1):
        model.train()
        total = torch.zeros((), device=device)
        for _, batch in train.batches(training.batch_size, shuffle=True, generator=generator):
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            labels = batch.pop("labels")
            with _autocast(device):
                logits = model(**batch).logits
            loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), training.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            total += loss.detach()
        if not math.isfinite(float(total)):
            raise FloatingPointError(f"bare loop: non-finite loss at epoch {epoch}")
        if valid is None:
            continue
        score = _bare_accuracy(model, valid, device, max(64, training.batch_size))
        if score > best_score:
            best_score, bad_epochs = score, 0
            best_state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= training.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return best_score if best_state is not None else math.nan


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@torch.inference_mode()
def _bare_accuracy(model: torch.nn.Module, valid: TokenizedSplit, device: torch.device, batch_size: int) -> float:
    model.eval()
    correct = 0
    for _, batch in valid.batches(batch_size):
        inputs = {key: value.to(device) for key, value in batch.items() if key != "labels"}
        with _autocast(device):
            predicted = model(**inputs).logits.argmax(-1).cpu()
        correct += int((predicted == batch["labels"]).sum())
    return correct / len(valid)
