"""The cross-validator: one hybrid configuration fitted on the k folds of a spec. It knows nothing of Optuna.

Why a class of its own: the search scores a configuration with it (through the thin Optuna adapter in
:mod:`hft_search.objective`), ``train`` fits its fold ensemble and out-of-fold threshold with it, and
``hft-search verify`` re-runs it to check a recorded score. One code path for all three is what makes the
exported number trustworthy.

What is fixed per study, so that every configuration sees the same conditions (common random numbers):

* the folds: ``cv.repeats`` repeats of a stratified k-fold (grouped with ``cv.group_column``), and the seed of
  each fold: the new head's initial weights, the batch order, dropout (:mod:`hft_search.resampling`). The
  confirmation round passes another :class:`~hft_search.resampling.Resampling`: fresh repeats of the same k-fold;
* the cached inputs (content-addressed, shared by every process of the study): tokenized data, the teacher's
  outputs per fold (a teacher is fine-tuned once per fold and teacher setting, not once per configuration), and
  importance scores per fold, score kind and student shape.

The teacher's outputs are its logits and its pooled block states (PKD's hidden-state term, see
:mod:`hft_search.training.states` for what they cost) on the fold's training rows and on ``data.unlabeled``,
the transfer set: the student of a fold trains on both, the unlabeled rows labelled by that fold's teacher only.
The unlabeled set never holds a labelled training row or a test row (:func:`hft_search.data.load_data`), so no
validation row of any fold and no test row reaches the student through it.
"""

from __future__ import annotations

import gc
import logging
import platform
import time
from dataclasses import dataclass
from typing import Any

import torch

from hft_search.caching import Cache, folder_digest, installed_versions
from hft_search.data import LabelledData, TokenizedSplit, load_data, tokenize
from hft_search.exceptions import DataError, SpecError, SpecIssue
from hft_search.models import BaseModel, load_base, load_tokenizer, pooling_of, resolve_source
from hft_search.resampling import Resampling, groups_digest, make_folds
from hft_search.spec import HybridConfig, StudySpec, check_against_layers
from hft_search.training import (
    EpochCallback,
    FineTuneResult,
    compute_importance,
    compute_metric,
    fine_tune,
    initial_model,
    predict_logits,
    resolve_device,
    teacher_config,
)
from hft_search.training.loop import reinit_count
from hft_search.training.states import MAX_STATE_BYTES, predict_outputs

logger = logging.getLogger(__name__)


def package_versions() -> dict[str, str]:
    """Versions that determine results, recorded in every trial and export."""
    packages = ("hft_search", "torch", "transformers", "optuna", "peft", "scikit-learn")
    return {"python": platform.python_version(), **installed_versions(packages)}


def teacher_setting(config: HybridConfig, seed: int) -> dict[str, Any]:
    """What determines a configuration's teacher, as recorded in trials and cache keys.

    A checkpoint is named by its content hash (a checkpoint overwritten in place is a new teacher); a
    fine-tuned teacher by its training settings and seed (``distill.teacher_seed``, else the fit's ``seed``).
    """
    distill = config.distill
    if distill.teacher:
        return {"checkpoint": resolve_source(distill.teacher), "sha256": folder_digest(resolve_source(distill.teacher))}
    training = teacher_config(config).training
    return {"learning_rate": training.learning_rate, "epochs": training.epochs, "batch_size": training.batch_size,
            "seed": seed if distill.teacher_seed is None else distill.teacher_seed}


def fit_teacher(base: BaseModel, config: HybridConfig, train: TokenizedSplit, *, labels: tuple[str, ...],
                metric: str, seed: int, device: torch.device) -> torch.nn.Module:
    """The teacher of ``config``: its checkpoint, or the full model fine-tuned on ``train`` (all epochs, no
    validation); used by the folds here and by ``train``'s final fit alike."""
    if config.distill.teacher:
        return load_base(config.distill.teacher, labels).template
    setting = teacher_setting(config, seed)
    return fine_tune(base, teacher_config(config), train, None, metric=metric, seed=setting["seed"],
                     device=device).model


@dataclass
class TeacherOutputs:
    """What a teacher hands its student: logits on every row the student trains on, and its pooled block
    states there (None when they exceed :data:`~hft_search.training.states.MAX_STATE_BYTES`)."""

    logits: torch.Tensor
    states: torch.Tensor | None

    @classmethod
    def of(cls, model: torch.nn.Module, split: TokenizedSplit, device: torch.device) -> TeacherOutputs:
        logits, states = predict_outputs(model, split, device=device)
        if states.numel() * states.element_size() > MAX_STATE_BYTES:
            logger.warning("the teacher's block states for %d rows take %.0f MB, more than the %.0f MB kept; "
                           "distill.hidden_weight > 0 cannot run on them", len(split),
                           states.numel() * states.element_size() / 1e6, MAX_STATE_BYTES / 1e6)
            states = None
        return cls(logits, states)

    def needed(self, config: HybridConfig) -> TeacherOutputs:
        """Check that the states are there when the configuration's hidden-state term needs them."""
        if config.distill.hidden_weight > 0 and self.states is None:
            raise SpecError([SpecIssue("distill.hidden_weight", "the teacher's block states of this many rows "
                                       f"exceed the {MAX_STATE_BYTES / 1e6:.0f} MB bound; lower "
                                       "data.max_unlabeled_samples or data.max_train_samples, or set 0")])
        return self


def student_split(train: TokenizedSplit, transfer: TokenizedSplit | None, config: HybridConfig,
                  pad_id: int) -> TokenizedSplit:
    """What a configuration's student trains on: the labelled rows, then the transfer set when it distils."""
    if transfer is None or not (config.distill.enabled and (config.distill.alpha > 0
                                                            or config.distill.hidden_weight > 0)):
        return train
    return train.concat(transfer, pad_id)


@dataclass
class FoldResult:
    """One configuration fitted on one fold. ``fit.model`` is the trained model: drop it when done."""

    fold: int
    seed: int
    score: float
    best_epoch: int
    epochs_run: int
    seconds: float
    teacher_score: float | None
    fit: FineTuneResult
    rows: tuple[int, int]  # rows trained on and scored: the corrected t-test's n_train, n_test


class CrossValidator:
    """Repeated k-fold cross-validation of hybrid configurations under one spec.

    Construction does the per-process work once: read and check the data, load the base model, tokenize, and
    build the folds. ``data`` and ``base`` may be passed in to share them. ``resampling`` is the search's
    (``cv.folds`` × ``cv.repeats``) unless given: the confirmation round passes fresh repeats.
    """

    def __init__(self, spec: StudySpec, *, cache: Cache | None = None, data: LabelledData | None = None,
                 base: BaseModel | None = None, resampling: Resampling | None = None) -> None:
        self.spec = spec
        self.cache = cache if cache is not None else Cache(None)
        self.data = data if data is not None else load_data(spec.data, spec.cv.group_column)
        if spec.cv.group_column is not None and self.data.train.groups is None:
            raise DataError(f"cv.group_column: the data passed in carries no groups; load it with "
                            f"load_data(spec.data, {spec.cv.group_column!r})")
        self.base = base if base is not None else load_base(spec.model.name, self.data.label_names,
                                                            spec.model.revision, spec.model.pooling)
        check_against_layers(spec, self.base.num_layers)
        self.pooling = pooling_of(self.base.template)
        if spec.model.pooling not in (None, self.pooling):
            raise ValueError(f"model.pooling is {spec.model.pooling} but the base model given reads {self.pooling}; "
                             "load it with load_base(..., pooling=spec.model.pooling)")
        self.device = resolve_device(spec.device)
        self.resampling = resampling or Resampling.search(spec.cv)
        self.folds = make_folds(self.data.train.labels, self.data.train.groups, self.resampling)
        self.tokens = self._tokenized()
        self.transfer = self._tokenized("unlabeled") if self.data.unlabeled is not None else None

    def fold_seed(self, fold: int) -> int:
        return self.resampling.fold_seed(fold)


    def fit_fold(self, fold: int, config: HybridConfig, *, on_epoch: EpochCallback | None = None) -> FoldResult:
        """Fine-tune ``config`` on fold ``fold``'s training part and score its validation part.

        ``on_epoch`` sees every epoch's validation score (and may raise to stop the fine-tune).
        """
        train_idx, valid_idx = self.folds[fold]
        train, valid = self.tokens.subset(train_idx), self.tokens.subset(valid_idx)
        seed = self.fold_seed(fold)
        start = time.perf_counter()
        teacher, teacher_score = (None, None)
        student_train = student_split(train, self.transfer, config, self.pad_id)
        if config.distill.enabled:
            teacher, teacher_score = self._teacher(fold, config, train, valid, student_train)
        scores = self._importance(fold, config, train) if config.importance.enabled else None
        fit = fine_tune(self.base, config, student_train, valid, metric=self.spec.cv.metric, seed=seed,
                        device=self.device, teacher_logits=None if teacher is None else teacher.logits,
                        teacher_states=None if teacher is None else teacher.needed(config).states,
                        importance_scores=scores, on_epoch=on_epoch)
        return FoldResult(fold, seed, fit.score, fit.best_epoch, len(fit.history), time.perf_counter() - start,
                          teacher_score, fit, (len(train_idx), len(valid_idx)))

    # -- cached per-study inputs --------------------------------------------------------------------------

    def _model_key(self) -> dict[str, Any]:
        return {"model": resolve_source(self.spec.model.name), "revision": self.spec.model.revision,
                "max_length": self.spec.model.max_length, "data": self.data.fingerprint}

    @property
    def pad_id(self) -> int:
        return int(load_tokenizer(self.spec.model.name, self.spec.model.revision).pad_token_id)

    def _tokenized(self, split: str = "train") -> TokenizedSplit:
        rows = self.data.train if split == "train" else self.data.unlabeled

        def compute() -> dict[str, torch.Tensor]:
            tokenizer = load_tokenizer(self.spec.model.name, self.spec.model.revision)
            return tokenize(rows, tokenizer, self.spec.model.max_length).to_dict()

        parts = self._model_key() if split == "train" else {**self._model_key(), "split": split}
        return TokenizedSplit.from_dict(self.cache.get_or_compute("tokenized", parts, compute))

    def _fold_key(self, fold: int) -> dict[str, Any]:
        key = {**self._model_key(), **self.resampling.fold_key(fold)}
        if self.data.train.groups is not None:
            key["groups"] = groups_digest(self.data.train.groups)
        return key

    def _student_layers(self, config: HybridConfig) -> int:
        wanted = config.distill.student_layers if config.distill.enabled else None
        return self.base.num_layers if wanted is None else min(wanted, self.base.num_layers)

    def _importance(self, fold: int, config: HybridConfig, train: TokenizedSplit) -> dict[str, torch.Tensor]:
        """Scores of the model that is trained: for a truncated student, the student (see ``initial_model``)."""
        imp, seed = config.importance, self.fold_seed(fold)
        parts = {**self._fold_key(fold), "score": imp.score, "batches": imp.batches,
                 "batch_size": config.training.batch_size, "seed": seed, "pooling": self.pooling,
                 "student_layers": self._student_layers(config)}
        if self._student_layers(config) < self.base.num_layers:
            parts["student_init"] = config.distill.student_init
        reinit = reinit_count(config, self._student_layers(config))
        if reinit:
            parts["reinit_layers"] = reinit

        def compute() -> dict[str, torch.Tensor]:
            model = initial_model(self.base, config, seed)
            return compute_importance(model, train, imp, batch_size=config.training.batch_size,
                                      device=self.device, seed=seed)

        return self.cache.get_or_compute("importance", parts, compute)

    def _teacher(self, fold: int, config: HybridConfig, train: TokenizedSplit, valid: TokenizedSplit,
                 student_train: TokenizedSplit) -> tuple[TeacherOutputs, float]:
        """The teacher's outputs on the student's rows (the fold's training rows, then the transfer set) and
        its validation score, cached per fold and teacher setting.

        The teacher never sees the fold's validation part: it trains all its epochs on the labelled training
        part (no early stopping), and the validation part only scores it.
        """
        seed = self.fold_seed(fold)
        parts = {**self._fold_key(fold), "teacher": teacher_setting(config, seed), "outputs": 2,
                 "pooling": self.pooling, "rows": len(student_train),
                 "unlabeled": self.data.fingerprint if len(student_train) > len(train) else None}

        def compute() -> dict[str, Any]:
            model = fit_teacher(self.base, config, train, labels=self.data.label_names,
                                metric=self.spec.cv.metric, seed=seed, device=self.device)
            model.eval()
            outputs = TeacherOutputs.of(model, student_train, self.device)
            probs = torch.softmax(predict_logits(model, valid, device=self.device), dim=-1)
            score = compute_metric(self.spec.cv.metric, valid.labels.numpy(), probs.numpy())
            del model
            release_memory()
            return {"logits": outputs.logits, "states": outputs.states, "score": float(score)}

        entry = self.cache.get_or_compute("teacher_logits", parts, compute)  # logits and block states
        return TeacherOutputs(entry["logits"], entry["states"]), float(entry["score"])


def release_memory() -> None:
    """Free what a fold left behind, so memory does not grow from fold to fold and trial to trial."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
