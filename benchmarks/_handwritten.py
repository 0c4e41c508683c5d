"""The study an ML engineer writes today with Optuna and ``transformers.Trainer``: side (h) of
``study_vs_handwritten``. Nothing of hft_search is used here; this is the code a user would write by hand.

How it is written, and where each choice comes from:

* Optuna: one objective; ``StratifiedKFold`` inside it; after every fold the running CV mean is reported
  (``trial.report(mean, fold)``) and ``trial.should_prune()`` asked, with Optuna's ``MedianPruner()`` and
  ``TPESampler`` at their defaults (Optuna's pruning examples). The knobs are suggested under hft_search's names
  so that both sides can be given the same enqueued configurations.
* Hugging Face: per trial, the tokenizer is loaded and the dataset tokenized with ``datasets.map`` (the HF
  text-classification examples); per fold, the model is loaded with ``from_pretrained`` and trained by a
  ``Trainer`` with evaluation every epoch and ``DataCollatorWithPadding``. The fold score is the best epoch's
  validation accuracy (``trainer.state.best_metric``), as hft_search's is. No checkpoints are written
  (``save_strategy="no"``): the leanest way to get that number, so this side is not slowed by disk writes.
* Distillation: the standard HF recipe, a ``Trainer`` subclass overriding ``compute_loss`` with a live
  teacher in eval mode; the teacher (the full model) is fine-tuned by its own ``Trainer`` on the fold's training
  part inside every distillation trial, since nothing carries it from one trial to the next.
* Importance: the scores are computed inside every importance trial, with hft_search's definition (mean |grad|
  of the cross-entropy over the first ``batches`` of a seeded shuffle, model in eval mode; whole tensors frozen,
  lowest mean score first, until the threshold's share of the candidate parameters is frozen).
* LoRA: ``peft`` with ``task_type=SEQ_CLS`` on the attention projections, the pooler trained in full beside the
  classifier (``modules_to_save``), as hft_search trains the head.
* Learning rate: hft_search's documented rule, ``lr * min(max_lr_multiplier, 1 / trainable fraction)``, so
  that a configuration is the same run on both sides (a user picks larger rates for LoRA or a frozen
  bottom by hand; the rule is that choice written down).

Every other training setting is hft_search's default, set explicitly on the ``TrainingArguments``: AdamW (the
Trainer's fused default), linear warm-up over 10 % of the steps and decay, weight decay 0.01 (not on biases and
LayerNorm), clipping at 1.0. The instrumentation (a :class:`Stopwatch` around tokenization, model loading,
teacher fits and importance scoring, and the fold and epoch scores kept as trial attributes) is the only
addition. A teacher fit's time includes its own model loading.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold
from torch import nn


class Stopwatch:
    """Seconds and calls per named part of a study (tokenization, teacher fits, ...)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - start
            self.calls[part] += 1

    def report(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "calls": dict(self.calls)}


@dataclass(frozen=True)
class Settings:
    """What both sides share: model, rows, folds, epochs, batch size, the searched space and the defaults."""

    model_dir: str
    rows_file: str  # tsv with text and integer label columns: the rows both sides fine-tune on
    output_dir: str  # scratch for the Trainers
    space: dict[str, dict[str, Any]]  # hft_search's search_space notation
    folds: int
    max_length: int
    epochs: int
    batch_size: int
    seed: int = 0  # of the folds (hft_search's cv.seed)
    training_seed: int = 0  # fold f trains with seed training_seed * 1000 + f (hft_search: cv.seed * 1000 + f)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_lr_multiplier: float = 10.0
    distill_beta: float = 0.5
    teacher_learning_rate: float = 5e-5
    teacher_epochs: int = 3
    teacher_batch_size: int = 32
    importance_batches: int = 4
    lora_alpha: float = 16.0


@dataclass(frozen=True)
class Config:
    """One configuration as the objective reads it from a trial (``None``: that method is off)."""

    learning_rate: float
    freeze_layers: int | None
    importance_threshold: float | None
    distill: tuple[float, float, int] | None  # alpha, temperature, student blocks
    lora_r: int | None


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> Config:
    """Sample a configuration: a method's switch first, its knobs only when it is on."""

    def value(name: str) -> Any:
        entry = space[name]
        if "categorical" in entry:
            return trial.suggest_categorical(name, entry["categorical"])
        kind, (low, high) = ("float", entry["float"]) if "float" in entry else ("int", entry["int"])
        method = trial.suggest_float if kind == "float" else trial.suggest_int
        return method(name, low, high, log=entry.get("log", False))

    def on(group: str) -> bool:
        return bool(value(f"{group}.enabled"))

    learning_rate = value("training.learning_rate")
    freeze = value("freeze.layers") if on("freeze") else None
    importance = value("importance.threshold") if on("importance") else None
    distill = ((value("distill.alpha"), value("distill.temperature"), value("distill.student_layers"))
               if on("distill") else None)
    lora = value("lora.r") if on("lora") else None
    return Config(learning_rate, freeze, importance, distill, lora)


def accuracy(prediction: Any) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def _trainer_classes() -> tuple[type, type]:
    """``Trainer`` and the distillation subclass (imported late: importing transformers' trainer costs seconds)."""
    from transformers import Trainer

    class DistillationTrainer(Trainer):
        """The HF knowledge-distillation recipe: the student's loss mixes the teacher's soft labels in.

        L = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + beta * CE(student, labels)
        """

        loss_is_scaled_for_ga = False  # a per-batch mean, as the Trainer asks subclasses to say

        def __init__(self, *args: Any, teacher: nn.Module, alpha: float, beta: float, temperature: float,
                     watch: Stopwatch, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.teacher = teacher.to(self.args.device).eval()
            self.alpha, self.beta, self.temperature, self.watch = alpha, beta, temperature, watch

        def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            with self.watch("teacher forward in distillation steps"), torch.no_grad():
                teacher_logits = self.teacher(**inputs).logits
            t = self.temperature
            soft = F.kl_div(F.log_softmax(outputs.logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                            log_target=True, reduction="batchmean")
            loss = self.alpha * t * t * soft + self.beta * F.cross_entropy(outputs.logits, labels)
            return (loss, outputs) if return_outputs else loss

    return Trainer, DistillationTrainer


class HandwrittenObjective:
    """The Optuna objective: k-fold CV of one configuration, one ``Trainer`` per fold."""

    def __init__(self, settings: Settings, watch: Stopwatch) -> None:
        import datasets

        self.settings = settings
        self.watch = watch
        with watch("reading the data"):
            self.raw = datasets.load_dataset("csv", data_files=settings.rows_file, delimiter="\t", split="train")
        splitter = StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed)
        self.folds = list(splitter.split(np.zeros(len(self.raw)), self.raw["label"]))
        self.num_labels = len(set(self.raw["label"]))

    def __call__(self, trial: optuna.Trial) -> float:
        from transformers import AutoTokenizer, DataCollatorWithPadding

        config = suggest(trial, self.settings.space)
        with self.watch("tokenization"):
            tokenizer = AutoTokenizer.from_pretrained(self.settings.model_dir)
            dataset = self.raw.map(lambda batch: tokenizer(batch["text"], truncation=True,
                                                           max_length=self.settings.max_length), batched=True)
        collator = DataCollatorWithPadding(tokenizer)
        scores, epoch_scores, epochs, teacher_epochs = [], [], 0, 0
        try:
            for fold, (train_rows, valid_rows) in enumerate(self.folds):
                train, valid = dataset.select(train_rows), dataset.select(valid_rows)
                seed = self.settings.training_seed * 1000 + fold
                teacher = None
                if config.distill is not None:
                    teacher = self.fit_teacher(train, tokenizer, collator, seed)
                    teacher_epochs += self.settings.teacher_epochs
                model = self.student(config, train, collator, seed)
                trainer = self.trainer(model, config, train, valid, tokenizer, collator, seed, teacher)
                trainer.train()
                epochs += round(trainer.state.epoch)
                scores.append(float(trainer.state.best_metric))
                epoch_scores.append([log["eval_accuracy"] for log in trainer.state.log_history
                                     if "eval_accuracy" in log])
                trial.report(float(np.mean(scores)), fold)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {fold}")
        finally:
            trial.set_user_attr("fold_scores", scores)
            trial.set_user_attr("epoch_scores", epoch_scores)
            trial.set_user_attr("fold_epochs", epochs)
            trial.set_user_attr("teacher_epochs", teacher_epochs)
        return float(np.mean(scores))

    # -- one fold ----------------------------------------------------------------------------------------------

    def arguments(self, name: str, *, learning_rate: float, epochs: int, batch_size: int, seed: int,
                  evaluate: bool) -> Any:
        from transformers import TrainingArguments

        s = self.settings
        return TrainingArguments(
            output_dir=str(Path(s.output_dir) / name), num_train_epochs=epochs, learning_rate=learning_rate,
            per_device_train_batch_size=batch_size, per_device_eval_batch_size=max(64, batch_size),
            weight_decay=s.weight_decay, warmup_steps=s.warmup_ratio,  # a float < 1 is a share of the steps
            lr_scheduler_type="linear", max_grad_norm=s.max_grad_norm, seed=seed,
            eval_strategy="epoch" if evaluate else "no", save_strategy="no",
            metric_for_best_model="accuracy" if evaluate else None,
            logging_strategy="epoch", report_to="none", disable_tqdm=True, use_cpu=True)

    def load_model(self, seed: int) -> nn.Module:
        from transformers import AutoModelForSequenceClassification, set_seed
        from transformers.utils import logging as hf_logging

        set_seed(seed)  # the new classifier's initial weights
        with self.watch("model loading"):
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # "some weights newly initialized": expected for a new head
            try:
                return AutoModelForSequenceClassification.from_pretrained(self.settings.model_dir,
                                                                          num_labels=self.num_labels)
            finally:
                hf_logging.set_verbosity(verbosity)

    def fit_teacher(self, train: Any, tokenizer: Any, collator: Any, seed: int) -> nn.Module:
        """The full model fine-tuned on the fold's training part, every epoch, no evaluation."""
        trainer_class, _ = _trainer_classes()
        s = self.settings
        with self.watch("teacher fits"):
            teacher = self.load_model(seed)
            args = self.arguments("teacher", learning_rate=s.teacher_learning_rate, epochs=s.teacher_epochs,
                                  batch_size=s.teacher_batch_size, seed=seed, evaluate=False)
            trainer_class(model=teacher, args=args, train_dataset=train, processing_class=tokenizer,
                          data_collator=collator).train()
        return teacher

    def student(self, config: Config, train: Any, collator: Any, seed: int) -> nn.Module:
        """The pretrained model, truncated, frozen, cut by importance and given LoRA adapters as ``config`` says."""
        model = self.load_model(seed)
        encoder = model.base_model
        head = [encoder.pooler, model.classifier]
        if config.distill is not None and config.distill[2] < len(encoder.encoder.layer):
            encoder.encoder.layer = encoder.encoder.layer[:config.distill[2]]  # the bottom blocks, as DistilBERT
            model.config.num_hidden_layers = config.distill[2]
        if config.freeze_layers is not None:
            for module in [encoder.embeddings, *encoder.encoder.layer[:config.freeze_layers]]:
                module.requires_grad_(False)
        classic_lora = config.lora_r is not None and config.freeze_layers is None
        if config.importance_threshold is not None and not classic_lora:  # classic LoRA leaves nothing to cut
            with self.watch("importance scoring"):
                self.importance_cut(model, head, train, collator, config.importance_threshold, seed)
        if config.lora_r is not None:
            model = self.add_lora(model, config, len(encoder.encoder.layer))
        return model

    def importance_cut(self, model: nn.Module, head: list[nn.Module], train: Any, collator: Any,
                       threshold: float, seed: int) -> None:
        """Freeze the least important whole tensors among the trainable ones outside the head."""
        scores = self.grad_norm_scores(model, train, collator, seed)
        in_head = {id(p) for module in head for p in module.parameters()}
        candidates = [(name, p) for name, p in model.named_parameters() if p.requires_grad and id(p) not in in_head]
        to_freeze = math.floor(threshold * sum(p.numel() for _, p in candidates))
        frozen = 0
        for _, parameter in sorted(candidates, key=lambda item: scores[item[0]]):
            if frozen >= to_freeze:
                break
            parameter.requires_grad_(False)
            frozen += parameter.numel()

    def grad_norm_scores(self, model: nn.Module, train: Any, collator: Any, seed: int) -> dict[str, float]:
        """Mean |gradient| of every trainable parameter, averaged over the first batches of a seeded shuffle."""
        from torch.utils.data import DataLoader

        columns = [c for c in train.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "label")]
        loader = DataLoader(train.select_columns(columns), batch_size=self.settings.batch_size, shuffle=True,
                            collate_fn=collator, generator=torch.Generator().manual_seed(seed))
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        totals = {name: torch.zeros_like(p) for name, p in params.items()}
        model.eval()
        batches = 0
        for batch in islice(loader, self.settings.importance_batches):
            labels = batch.pop("labels")
            loss = F.cross_entropy(model(**batch).logits, labels)
            for (name, _), grad in zip(params.items(), torch.autograd.grad(loss, list(params.values()),
                                                                           allow_unused=True), strict=True):
                if grad is not None:
                    totals[name] += grad.abs()
            batches += 1
        model.train()
        return {name: float(total.mean()) / batches for name, total in totals.items()}

    def add_lora(self, model: nn.Module, config: Config, blocks: int) -> nn.Module:
        """LoRA on the attention projections: of every block (classic LoRA), or of the frozen blocks only when
        the bottom is frozen (the blocks above keep training in full)."""
        from peft import LoraConfig, TaskType, get_peft_model

        projections = ("query", "key", "value")
        if config.freeze_layers is None:
            targets: list[str] = list(projections)
        else:
            targets = [f"encoder.layer.{i}.attention.self.{name}" for i in range(min(config.freeze_layers, blocks))
                       for name in projections]
        trainable = [p for p in model.parameters() if p.requires_grad]
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=self.settings.lora_alpha, lora_dropout=0.0,
            target_modules=targets, modules_to_save=["pooler"]))
        for parameter in trainable:  # peft freezes what is not an adapter; the upper blocks train on
            parameter.requires_grad_(True)
        return model

    def trainer(self, model: nn.Module, config: Config, train: Any, valid: Any, tokenizer: Any, collator: Any,
                seed: int, teacher: nn.Module | None) -> Any:
        trainer_class, distillation_class = _trainer_classes()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        fraction = trainable / sum(p.numel() for p in model.parameters())
        rate = config.learning_rate * min(self.settings.max_lr_multiplier, 1.0 / fraction)
        args = self.arguments("student", learning_rate=rate, epochs=self.settings.epochs,
                              batch_size=self.settings.batch_size, seed=seed, evaluate=True)
        common = {"model": model, "args": args, "train_dataset": train, "eval_dataset": valid,
                  "processing_class": tokenizer, "data_collator": collator, "compute_metrics": accuracy}
        if teacher is None:
            return trainer_class(**common)
        alpha, temperature, _ = config.distill
        return distillation_class(**common, teacher=teacher, alpha=alpha, beta=self.settings.distill_beta,
                                  temperature=temperature, watch=self.watch)
