"""Trial overhead: one CV trial of hft_search against the same work done two other ways.

* **bare PyTorch** — the k fold fine-tunes written by hand (:func:`benchmarks._common.bare_fine_tune`): the
  floor, since nothing can do the same work with less code around it. Target: our trial ≤ 1.10× of it.
* **transformers.Trainer** — the k fold fine-tunes driven by ``Trainer`` the way a user would search with it:
  per fold a ``Trainer`` with ``model_init`` and ``hyperparameter_search(backend="optuna", n_trials=1)``,
  evaluation every epoch, ``EarlyStoppingCallback`` with ``load_best_model_at_end`` (checkpoints of the model
  only, the best one kept), dynamic padding by ``DataCollatorWithPadding``. Target: our trial ≤ 0.8× of it.

All three fine-tune the same base model on the same folds, rows, epochs, batch size, sequence length, learning
rate, warm-up, weight decay and clipping; each evaluates its validation part after every epoch and keeps the
best epoch's weights. Tokenization, reading the data and loading the model happen once, before any timing.
The three run in rotating order, ``repeats`` times, and the best time of each is compared (background load
only ever adds time). On a CUDA device the same comparison runs again in bf16 (``gpu`` in the JSON); without
one it is skipped with the reason recorded.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from benchmarks._common import Context, bare_fine_tune, bench_spec, compare, machine_info, timed_trial
from hft_search.caching import Cache
from hft_search.models import load_tokenizer
from hft_search.objective import CVObjective
from hft_search.spec import HybridConfig, TrainingConfig
from hft_search.study import open_study


@dataclass(frozen=True)
class Sizes:
    rows: int  # CPU: training rows, split into `folds` folds
    gpu_rows: int  # the same on a GPU, where a few hundred rows take milliseconds
    folds: int
    max_length: int
    epochs: int
    batch_size: int
    repeats: int


SIZES = {
    "full": Sizes(rows=300, gpu_rows=8192, folds=3, max_length=48, epochs=2, batch_size=16, repeats=2),
    "quick": Sizes(rows=96, gpu_rows=1024, folds=3, max_length=32, epochs=1, batch_size=16, repeats=1),
    "smoke": Sizes(rows=48, gpu_rows=256, folds=2, max_length=16, epochs=2, batch_size=16, repeats=1),
}
LEARNING_RATE = 5e-5


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    folder = ctx.folder("trial_overhead")
    print(f"trial overhead: {sizes.rows} rows, {sizes.folds} folds, {sizes.epochs} epoch(s), "
          f"batch {sizes.batch_size}, max_length {sizes.max_length}, best of {sizes.repeats}", flush=True)
    cpu = measure(ctx, sizes, folder / "cpu", torch.device("cpu"), sizes.rows)
    if torch.cuda.is_available():
        print(f"the same on {torch.cuda.get_device_name()} in bf16, {sizes.gpu_rows} rows", flush=True)
        gpu = measure(ctx, sizes, folder / "gpu", torch.device("cuda"), sizes.gpu_rows)
    else:
        gpu = {"skipped": "no CUDA device"}
        print("  GPU: skipped (no CUDA device)")
    return {"sizes": sizes, "learning_rate": LEARNING_RATE, "cpu": cpu, "gpu": gpu,
            "targets": cpu["targets"] + gpu.get("targets", [])}


def measure(ctx: Context, sizes: Sizes, folder: Path, device: torch.device, rows: int) -> dict[str, Any]:
    """Time the three ways of running one CV trial on ``device`` and compare them."""
    folder.mkdir(parents=True)
    fixed = {"training.epochs": sizes.epochs, "training.batch_size": sizes.batch_size,
             "training.learning_rate": LEARNING_RATE}
    spec = bench_spec(ctx, "trial-overhead", folder, rows=rows, max_length=sizes.max_length, folds=sizes.folds,
                      fixed=fixed, device=device.type)
    objective = CVObjective(spec, cache=Cache(spec.cache_dir))
    study = open_study(spec)
    training = HybridConfig.from_flat(fixed).training
    trainer = TrainerTrial(objective, training, device, folder)

    def ours() -> tuple[float, float]:
        trial, seconds = timed_trial(study, objective)
        if trial.value is None:
            raise RuntimeError(f"the hft_search trial ended {trial.state.name}: {trial.user_attrs}")
        return seconds, trial.value

    contenders: dict[str, Callable[[], tuple[float, float]]] = {
        "hft_search": ours, "bare": lambda: bare_trial(objective, training, device), "trainer": trainer}
    # One bare fold first: kernel selection and the allocator's pools are not charged to whoever runs first.
    first_train, first_valid = objective.cv.folds[0]
    bare_fine_tune(objective.cv.base, objective.cv.tokens.subset(first_train), objective.cv.tokens.subset(first_valid),
                   training, device)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    scores: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for repeat in range(sizes.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            elapsed, score = contenders[name]()
            seconds[name].append(elapsed)
            scores[name].append(score)
            print(f"  {name}: {elapsed:.2f} s, mean fold accuracy {score:.4f}", flush=True)
    best = {name: min(values) for name, values in seconds.items()}
    label = "GPU bf16" if device.type == "cuda" else "CPU"
    targets = [
        compare(f"CV trial / bare PyTorch loop ({label})", best["hft_search"], best["bare"], "bare loop", 1.10),
        compare(f"CV trial / Trainer + hyperparameter_search ({label})", best["hft_search"], best["trainer"],
                "Trainer", 0.80),
    ]
    return {"machine": machine_info(device), "rows": rows, "trial_seconds": seconds,
            "trial_seconds_median": {name: statistics.median(values) for name, values in seconds.items()},
            "mean_fold_accuracy": scores, "trainer_settings": trainer.settings(), "targets": targets}


def bare_trial(objective: CVObjective, training: TrainingConfig, device: torch.device) -> tuple[float, float]:
    """The trial's fold fine-tunes as a hand-written loop: seconds and mean fold accuracy."""
    start = time.perf_counter()
    scores = [bare_fine_tune(objective.cv.base, objective.cv.tokens.subset(train), objective.cv.tokens.subset(valid),
                             training, device, seed=fold)
              for fold, (train, valid) in enumerate(objective.cv.folds)]
    return time.perf_counter() - start, float(np.mean(scores))


class TrainerTrial:
    """The trial's fold fine-tunes driven by ``transformers.Trainer`` and its Optuna hyperparameter search.

    The datasets are built once (tokenized rows without padding, as ``datasets.map`` of a tokenizer makes
    them); each call selects the fold's rows, builds one ``Trainer`` per fold and runs one search trial on it.
    """

    def __init__(self, objective: CVObjective, training: TrainingConfig, device: torch.device,
                 folder: Path) -> None:
        import datasets

        self.objective = objective
        self.training = training
        self.device = device
        self.folder = folder
        self.tokenizer = load_tokenizer(objective.spec.model.name, objective.spec.model.revision)
        tokens = objective.cv.tokens
        lengths = tokens.attention_mask.sum(dim=1).tolist()
        columns = {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}
        if tokens.token_type_ids is not None:
            columns["token_type_ids"] = tokens.token_type_ids
        rows = {name: [row[:n].tolist() for row, n in zip(values, lengths, strict=True)]
                for name, values in columns.items()}
        self.dataset = datasets.Dataset.from_dict({**rows, "labels": tokens.labels.tolist()})

    def arguments(self, output_dir: Path, fold: int) -> Any:
        from transformers import TrainingArguments

        training = self.training
        cuda = self.device.type == "cuda"
        return TrainingArguments(
            output_dir=str(output_dir), per_device_train_batch_size=training.batch_size,
            per_device_eval_batch_size=max(64, training.batch_size), num_train_epochs=training.epochs,
            learning_rate=training.learning_rate, weight_decay=training.weight_decay,
            warmup_steps=training.warmup_ratio,  # a float below 1 is a share of the steps in transformers 5
            lr_scheduler_type="linear", max_grad_norm=training.max_grad_norm,
            eval_strategy="epoch", save_strategy="epoch", save_only_model=True, save_total_limit=1,
            load_best_model_at_end=True, metric_for_best_model="accuracy", greater_is_better=True,
            logging_strategy="epoch", report_to="none", disable_tqdm=True, seed=fold,
            use_cpu=not cuda, bf16=cuda, dataloader_pin_memory=cuda)

    def settings(self) -> dict[str, Any]:
        args = self.arguments(self.folder / "trainer", 0)
        return {"optim": str(args.optim), "save_strategy": str(args.save_strategy), "save_only_model": True,
                "load_best_model_at_end": True, "early_stopping_patience": self.training.patience,
                "hyperparameter_search": "backend=optuna, n_trials=1 per fold, learning rate fixed"}

    def __call__(self) -> tuple[float, float]:
        with tempfile.TemporaryDirectory(dir=self.folder) as scratch:
            start = time.perf_counter()
            scores = [self.fold(fold, train, valid, Path(scratch) / f"fold{fold}")
                      for fold, (train, valid) in enumerate(self.objective.cv.folds)]
            seconds = time.perf_counter() - start
        return seconds, float(np.mean(scores))

    def fold(self, fold: int, train: np.ndarray, valid: np.ndarray, output_dir: Path) -> float:
        from transformers import DataCollatorWithPadding, EarlyStoppingCallback, PrinterCallback, Trainer
        from transformers.utils import logging as hf_logging

        base, learning_rate = self.objective.cv.base, self.training.learning_rate

        def model_init() -> torch.nn.Module:
            return base.fresh(fold)

        def accuracy(prediction: Any) -> dict[str, float]:
            return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        optuna_verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            trainer = Trainer(model_init=model_init, args=self.arguments(output_dir, fold),
                              train_dataset=self.dataset.select(train), eval_dataset=self.dataset.select(valid),
                              data_collator=DataCollatorWithPadding(self.tokenizer), compute_metrics=accuracy,
                              callbacks=[EarlyStoppingCallback(early_stopping_patience=self.training.patience)])
            trainer.remove_callback(PrinterCallback)  # the per-epoch log dicts it prints, as a quiet user would
            best = trainer.hyperparameter_search(
                hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", learning_rate,
                                                                             learning_rate)},
                compute_objective=lambda metrics: metrics["eval_accuracy"], n_trials=1, direction="maximize",
                backend="optuna")
        finally:
            hf_logging.set_verbosity(verbosity)
            optuna.logging.set_verbosity(optuna_verbosity)
        if not math.isfinite(best.objective):
            raise RuntimeError(f"Trainer fold {fold}: objective {best.objective}")
        return float(best.objective)
