"""The study spec: a YAML file validated into :class:`StudySpec`, and the hybrid knobs it searches.

Why pydantic models for the knob groups: every knob has one documented default and one valid range, written
once as a field of a group model (:class:`FreezeConfig`, :class:`ImportanceConfig`, ...). The same models
validate a spec's ``search_space`` bounds and ``fixed`` values, and later validate each trial's resolved
configuration (:class:`HybridConfig`), so a range can never drift between "what a spec may say" and "what the
engine accepts".

All problems of a spec are collected and raised together as one :class:`~hft_search.exceptions.SpecError`
whose lines name the field path (``search_space.training.learning_rate: low must be below high``).

This module imports nothing of the project except :mod:`hft_search.exceptions` and :mod:`hft_search.urls`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hft_search.exceptions import SpecError, SpecIssue
from hft_search.urls import mask_url, storage_url_problem

SPEC_FORMAT_VERSION = 1

MAX_SPEC_BYTES = 1_000_000
"""Largest spec file read: a real spec is a few kilobytes; more is a mistake (a data file given as the spec)."""

MAX_SPEC_VALUES = 100_000
"""Most values a spec may expand to once YAML aliases are resolved. A few aliases nested ten deep (a
"billion laughs" document of a few hundred bytes) expand to billions of values and gigabytes of memory."""

MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65_536
MAX_LORA_RANK = 4096
"""Upper bounds of knobs that have no natural one, so that a typo (a missing decimal point, an extra zero)
fails in ``validate`` instead of running for hours; the model check bounds ``lora.r`` by the hidden size."""

MIN_LEARNING_RATE = 1e-9
MAX_LEARNING_RATE = 1.0
"""Bounds of every learning rate (``training.learning_rate``, ``distill.teacher_learning_rate``). AdamW moves
each weight by about the learning rate per step: above 1 a single step wipes out the pretrained weights, and
below 1e-9 a fine-tune of any length changes nothing that float32 can show. Both are typos, not settings."""

# --------------------------------------------------------------------------------------------------------------
# Types that carry a rule wherever they are used: secrets masked in every dump, no true/false for a number.
# --------------------------------------------------------------------------------------------------------------

REVEAL_SECRETS = "reveal_secrets"
"""``model_dump(context={REVEAL_SECRETS: True})`` keeps passwords; only :meth:`StudySpec.to_yaml` asks for it."""


def _masked(value: Any, info: SerializationInfo) -> Any:
    """``value`` with the password of every URL in it masked, unless the dump asked to reveal secrets."""
    if (info.context or {}).get(REVEAL_SECRETS):
        return value
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {key: _masked(item, info) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item, info) for item in value]
    return value


MASKED = PlainSerializer(_masked, when_used="always")
"""Serializer of secret-bearing fields: every ``model_dump`` of the spec (``validate``'s output, the study's
``spec`` attribute, exported specs, ``hft_search.json``) shows ``***`` for the password. Masking follows the
*type*, so a new URL field declared :data:`SecretUrl` cannot leak however the spec is dumped."""


def _check_storage_url(url: str) -> str:
    problem = storage_url_problem(url)
    if problem is not None:
        raise ValueError(problem)
    return url


SecretUrl = Annotated[str, MASKED]
"""A URL that may carry a password. Every URL-valued field of the spec has this type (or :data:`StorageUrl`)."""
StorageUrl = Annotated[SecretUrl, AfterValidator(_check_storage_url)]
"""A study storage URL: secret, and of a kind ``run`` can open (no ``mysql://``, no in-memory SQLite)."""


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(arg) for arg in get_args(annotation) if get_origin(annotation) is not Literal)


def _numbers(annotation: Any) -> bool:
    """Whether ``annotation`` holds numbers only (``int``, ``float``, a tuple of them): no place for a bool."""
    if annotation in (int, float):
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _numbers(args[0])
    return origin is tuple and bool(args) and all(_numbers(arg) for arg in args if arg is not Ellipsis)


class _SpecModel(BaseModel):
    """Base of every spec model: a YAML boolean is never taken as a number.

    YAML reads ``true``, ``yes`` and ``on`` as booleans, and pydantic turns a boolean into 1 or 0 for a number
    field: ``freeze.layers: true`` would silently freeze one layer. A field that is not itself a switch refuses
    them (in a pair of bounds too).
    """

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        values = value if isinstance(value, list | tuple) and get_origin(annotation) is tuple else [value]
        if any(isinstance(v, bool) for v in values) and not _admits_bool(annotation) \
                and (_numbers(annotation) or isinstance(value, bool)):
            raise ValueError("true/false where a number belongs (YAML reads true, yes and on as booleans); "
                             "write a number")
        return value


# --------------------------------------------------------------------------------------------------------------
# Knob groups: one model per strategy, one field per knob. Field constraints are the knob's valid range.
# --------------------------------------------------------------------------------------------------------------


class _Group(_SpecModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = False


class FreezeConfig(_Group):
    """Freeze the embeddings and the bottom ``layers`` encoder blocks (no gradient, not in the optimizer)."""

    layers: int = Field(0, ge=0, description="number of bottom encoder blocks to freeze")
    embeddings: bool = Field(True, description="freeze the embedding layer too")


class ImportanceConfig(_Group):
    """Train only parameters whose gradient-based importance is above the ``threshold`` quantile."""

    threshold: float = Field(0.5, ge=0.0, lt=1.0, description="quantile q in [0, 1) of the importance cut")
    score: Literal["grad_norm", "fisher", "grad_x_weight"] = Field("grad_norm", description="importance score")
    granularity: Literal["tensor", "element"] = Field("tensor", description="whole tensors or single elements")
    batches: int = Field(4, ge=1, le=10_000, description="training batches the scores are averaged over")


class DistillConfig(_Group):
    """Knowledge distillation: L = α·T²·KL(teacher ‖ student at temperature T) + β·CE(student, y)."""

    alpha: float = Field(0.5, ge=0.0, description="weight of the soft-label (KL) term")
    beta: float = Field(0.5, ge=0.0, description="weight of the hard-label (CE) term")
    temperature: float = Field(2.0, gt=0.0, description="softmax temperature T")
    student_layers: int | None = Field(
        None, ge=1, description="truncate the student to its bottom n blocks (None: as many as the base model)"
    )
    teacher: str | None = Field(None, description="path of a fine-tuned teacher checkpoint (None: fine-tune one)")
    # The teacher fine-tune's own settings. They are knobs of their own, not the student's training.* values,
    # so that the teacher a trial distilled from is pinned by `export` and fitted again, unchanged, by `train`.
    teacher_learning_rate: float = Field(5e-5, ge=MIN_LEARNING_RATE, le=MAX_LEARNING_RATE,
                                         description="peak learning rate of the teacher fine-tune")
    teacher_epochs: int = Field(3, ge=1, le=MAX_EPOCHS, description="epochs of the teacher fine-tune (all of them)")
    teacher_batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE, description="batch size of the teacher fine-tune")
    teacher_seed: int | None = Field(
        None, description="seed of the teacher fine-tune (None: the fit's own seed, per fold in the search)"
    )
    hidden_weight: float = Field(
        0.0, ge=0.0, description="β_h of PKD's hidden-state loss: MSE of the L2-normalised pooled states of student "
        "block i and teacher block round(i·N_t/N_s), blocks below the top (0: off)")
    student_init: Literal["bottom", "alternate"] = Field(
        "bottom", description="student blocks from the bottom n blocks, or n blocks spread from the first to the "
        "last (DistilBERT: 0,2,4,7,9,11 of 12)")


class LoraConfig(_Group):
    """LoRA adapters (through ``peft``) on the parameters left frozen by the other strategies."""

    r: int = Field(8, ge=1, le=MAX_LORA_RANK, description="adapter rank (at most the model's hidden size)")
    alpha: float = Field(16.0, gt=0.0, description="adapter scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter input")
    targets: list[str] | Literal["all-linear"] | None = Field(
        None, description="module names to adapt, or all-linear: every linear projection of a block (None: the "
        "architecture's default)")
    variant: Literal["lora", "rslora", "dora"] = Field(
        "lora", description="plain LoRA, rsLoRA (scale alpha/sqrt(r)) or DoRA (magnitude and direction), through "
        "peft's use_rslora / use_dora")
    lr_ratio: float = Field(1.0, ge=1.0, description="LoRA+: the B matrices train at this times the rate of A (1: off)")


class TrainingConfig(_SpecModel):
    """The usual training settings. Always on, so it has no ``enabled`` switch."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    learning_rate: float = Field(5e-5, ge=MIN_LEARNING_RATE, le=MAX_LEARNING_RATE,
                                 description="peak AdamW learning rate, in [1e-9, 1]")
    weight_decay: float = Field(0.01, ge=0.0, description="decoupled weight decay (not on biases and LayerNorm)")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of steps of linear warm-up")
    epochs: int = Field(3, ge=1, le=MAX_EPOCHS, description="maximum epochs")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE, description="training batch size")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="override the model's dropout (None: keep)")
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient clipping norm (0: no clipping)")
    patience: int = Field(2, ge=1, description="epochs without improvement before early stopping")
    max_lr_multiplier: float = Field(
        10.0, ge=1.0, description="scale the learning rate by min(this, 1 / trainable fraction): configurations "
        "that train few parameters get a larger rate (1: every configuration trains at learning_rate)"
    )
    layer_lr_decay: float = Field(
        1.0, gt=0.0, le=1.0, description="layer-wise rate decay: the block k below the top trains at decay^k of "
        "the rate, the embeddings at decay^blocks; head and top block at the rate (1: off)")
    reinit_layers: int = Field(0, ge=0, description="re-initialise the top n trainable blocks (and a pretrained "
                               "pooler) before training, seeded")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="recompute block activations in backward to save memory (auto: on for models of "
        "1e9 parameters or more, off below)")


GROUPS: dict[str, type[BaseModel]] = {
    "freeze": FreezeConfig,
    "importance": ImportanceConfig,
    "distill": DistillConfig,
    "lora": LoraConfig,
    "training": TrainingConfig,
}
"""Knob groups in the order their strategies are applied (freeze → importance, LoRA; distillation changes the loss)."""

SWITCHABLE_GROUPS = ("freeze", "importance", "distill", "lora")


def knob_names() -> list[str]:
    """Every valid dotted knob name, ``group.field``."""
    return [f"{group}.{field}" for group, model in GROUPS.items() for field in model.model_fields]


def knob_default(name: str) -> Any:
    """The documented default of a knob."""
    group, field = name.split(".", 1)
    return GROUPS[group].model_fields[field].default


class HybridConfig(BaseModel):
    """One fully resolved hybrid fine-tuning configuration: what a single trial (or ``train``) runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    freeze: FreezeConfig = FreezeConfig()
    importance: ImportanceConfig = ImportanceConfig()
    distill: DistillConfig = DistillConfig()
    lora: LoraConfig = LoraConfig()
    training: TrainingConfig = TrainingConfig()

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> HybridConfig:
        """Build from dotted knob values (``{"freeze.layers": 2, ...}``); missing knobs take their defaults."""
        nested: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
        for name, value in values.items():
            group, field = name.split(".", 1)
            nested[group][field] = value
        return cls.model_validate(nested)

    def flat(self) -> dict[str, Any]:
        """The configuration as dotted knob values, the inverse of :meth:`from_flat`."""
        return {f"{group}.{k}": v for group in GROUPS for k, v in getattr(self, group).model_dump().items()}


# --------------------------------------------------------------------------------------------------------------
# Search-space entries, in Optuna's distribution terms.
# --------------------------------------------------------------------------------------------------------------


class _Dist(_SpecModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class FloatDist(_Dist):
    """``{float: [low, high], log: false, step: null}`` → ``trial.suggest_float``."""

    bounds: tuple[float, float] = Field(alias="float")
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatDist:
        low, high = self.bounds
        if not low < high:
            raise ValueError("low must be below high")
        if self.log and low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be used together (Optuna's rule); drop one")
        return self

    def endpoints(self) -> list[Any]:
        return list(self.bounds)


class IntDist(_Dist):
    """``{int: [low, high], step: 1, log: false}`` → ``trial.suggest_int``."""

    bounds: tuple[int, int] = Field(alias="int")
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntDist:
        low, high = self.bounds
        if not low < high:
            raise ValueError("low must be below high")
        if self.log and low < 1:
            raise ValueError("log scale needs low >= 1")
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be used together (Optuna's rule); drop one")
        return self

    def endpoints(self) -> list[Any]:
        return list(self.bounds)


class CategoricalDist(_Dist):
    """``{categorical: [a, b, ...]}`` → ``trial.suggest_categorical``."""

    choices: list[Any] = Field(alias="categorical", min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CategoricalDist:
        for choice in self.choices:
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise ValueError(f"choice {choice!r} is not None, bool, int, float or str (Optuna's rule)")
        if len({json.dumps(c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices repeat a value")
        return self

    def endpoints(self) -> list[Any]:
        return list(self.choices)


Distribution = FloatDist | IntDist | CategoricalDist
_DIST_KINDS: dict[str, type[_Dist]] = {"float": FloatDist, "int": IntDist, "categorical": CategoricalDist}

# --------------------------------------------------------------------------------------------------------------
# Spec sections.
# --------------------------------------------------------------------------------------------------------------


class _Section(_SpecModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Section):
    """Where the labelled text comes from: local files (``train``/``test``) or a hub dataset (``dataset``)."""

    train: str | None = Field(None, description="local csv/tsv/jsonl/parquet file (relative to the spec's folder)")
    test: str | None = Field(None, description="held-out local file scored by `hft-search train`")
    dataset: str | None = Field(None, description="hub dataset name (e.g. glue), instead of local files")
    config: str | None = Field(None, description="hub dataset configuration (e.g. sst2)")
    train_split: str = "train"
    test_split: str | None = Field(None, description="hub split used as the test set (e.g. validation)")
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_train_samples: int | None = Field(None, ge=2, description="stratified, seeded subsample of the training rows")
    max_test_samples: int | None = Field(None, ge=1)
    unlabeled: str | None = Field(None, description="local file of texts without labels: the distillation "
                                  "teacher labels them for the student (rows equal to labelled or test rows dropped)")
    unlabeled_column: str | None = Field(None, description="its text column (None: text_column)")
    max_unlabeled_samples: int | None = Field(None, ge=1, description="seeded subsample of the unlabeled rows")
    seed: int = 0
    deduplicate: bool = Field(False, description="drop exact copies of earlier training rows (same text and "
                              "label); off: they are counted in a warning")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.train is None) == (self.dataset is None):
            raise ValueError("give exactly one of `train` (a local file) or `dataset` (a hub dataset name)")
        if self.dataset is None and self.test_split is not None:
            raise ValueError("`test_split` is for hub datasets; for local files give `test: PATH`")
        return self


class ModelSpec(_Section):
    """The pretrained model: ``minilm`` (the packaged all-MiniLM-L6-v2), a local path, or a hub name."""

    name: str = "minilm"
    max_length: int = Field(128, ge=8, le=8192)
    revision: str | None = None
    family: str | None = Field(None, description="architecture family (bert, gpt2, llama, qwen2, ...); inferred "
                               "from the model's config, which must match it when given")
    pooling: Literal["cls", "mean", "last"] | None = Field(
        None, description="token states the head reads (None: what the checkpoint was trained for: "
        "sentence-transformers' pooling config, else cls for encoders and last for decoders)")


MAX_CV_REPEATS = 100
"""Most repeats of the k-fold: the search's repeats and the confirmation's fresh ones share a seed sequence."""


class CVSpec(_Section):
    folds: int = Field(3, ge=2, description="k of the (stratified) k-fold")
    shuffle: bool = True
    seed: int = 0
    metric: Literal["accuracy", "f1_macro", "f1", "mcc", "roc_auc"] = "accuracy"
    repeats: int = Field(1, ge=1, le=MAX_CV_REPEATS, description="repeated k-fold: k x repeats fold scores per "
                         "trial, a new split seed per repeat (cv.seed + repeat), the same splits in every trial")
    group_column: str | None = Field(None, min_length=1, description="data column naming each row's source: "
                                     "rows of one group never straddle folds (StratifiedGroupKFold)")

    @model_validator(mode="after")
    def _repeats_shuffle(self) -> CVSpec:
        if self.repeats > 1 and not self.shuffle:
            raise ValueError("cv.repeats > 1 needs cv.shuffle: true (unshuffled repeats are the same folds)")
        return self


class BaselineOptions(_Section):
    """The tuned baseline: a learning-rate sweep of the plain full fine-tune (``hft_search.baseline``)."""

    trials: int = Field(3, ge=1, le=20, description="learning rates of the sweep, spread over the searched range")


class ConfirmOptions(_Section):
    """The confirmation round after the search (``hft_search.confirm``)."""

    top: int = Field(3, ge=1, le=20, description="distinct configurations re-fitted with the best baseline")
    repeats: int = Field(1, ge=1, le=MAX_CV_REPEATS, description="fresh repeats of the k-fold they are fitted on")


class WarmStart(_Section):
    """Seed a new study with the ``top`` best configurations of an earlier study (``hft-search`` stored)."""

    study: str = Field(min_length=1, description="name of the earlier study")
    storage: StorageUrl | None = Field(None, description="its storage URL (None: this study's storage)")
    top: int = Field(3, ge=1, description="how many of its best COMPLETE trials to enqueue")


class StudyOptions(_Section):
    direction: Literal["maximize", "minimize"] = "maximize"
    objectives: Literal["score", "score+trainable_fraction", "score+student_params"] = Field(
        "score", description="single objective, or also minimise the trainable fraction / student size (Pareto)"
    )
    sampler: Literal["tpe", "random", "gp", "cmaes", "grid", "nsga2"] = "tpe"
    pruner: Literal["successive_halving", "hyperband", "wilcoxon", "median", "none"] = Field(
        "successive_halving", description="successive_halving/hyperband: multi-fidelity, decided after every "
        "fold-epoch; wilcoxon/median: between folds (wilcoxon needs cv.folds >= 5, see PRUNER_MIN_FOLDS)"
    )
    n_trials: int = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0, description="seconds; stop starting new trials after this")
    storage: StorageUrl | None = Field(
        None, description="URL; None: $HFT_SEARCH_STORAGE, else sqlite:///hft.db in the CWD")
    seed: int = 0
    allow_repeats: bool = Field(
        False, description="fine-tune a configuration the study already scored when the sampler proposes it "
        "again (folds and seeds are the study's, so a repeat measures only run-to-run noise); "
        "false: the trial reuses the verdict of the earlier COMPLETE trial (PRUNED and FAILED ones are fitted again)")
    heartbeat_interval: int = Field(60, ge=1, description="seconds between worker heartbeats (RDB storages)")
    grace_period: int | None = Field(None, ge=1, description="seconds without heartbeat before a trial is retried")
    max_retries: int = Field(3, ge=0, description="times a trial of a dead worker is re-queued")
    baseline: BaselineOptions | Literal[False] = Field(
        BaselineOptions(), description="a new study starts with a learning-rate sweep of the plain full fine-tune "
        "(outside n_trials); every lift is measured against its best (true: {trials: 3}; false: none)")
    confirm: ConfirmOptions | Literal[False] = Field(
        ConfirmOptions(), description="after the search, re-fit the top configurations and the best baseline on "
        "fresh folds; the printed winner comes from that round (false: skip)")
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="configurations (dotted knob: value) "
                                          "tried first, after the baseline")
    warm_start: WarmStart | None = Field(None, description="enqueue the best configurations of an earlier study")
    portfolio: Literal["literature", "none"] = Field(
        "literature", description="enqueue, after the baseline, the cited small-data recipes of "
        "hft_search/portfolio.py that the search space can express (false or none: off)")
    max_consecutive_failures: int = Field(
        3, ge=1, description="a worker stops (exit 1) after this many trials in a row fail from an exception "
        "(a bug, not out of memory)")

    @field_validator("portfolio", mode="before")
    @classmethod
    def _portfolio_off(cls, value: Any) -> Any:
        """``false`` reads as ``none``: a value, not a missing one, so that ``to_yaml`` (which leaves out every
        None) writes it and the spec loads back with the portfolio still off."""
        return "none" if value is False or value is None else value

    @field_validator("baseline", "confirm", mode="wrap")
    @classmethod
    def _on_off(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        """``true`` means the options' defaults, ``false`` turns it off, a mapping sets the options."""
        options = {"baseline": BaselineOptions, "confirm": ConfirmOptions}[info.field_name]
        if value is False or isinstance(value, options):
            return value
        if value is True or isinstance(value, Mapping):
            return options.model_validate({} if value is True else dict(value))
        raise ValueError(f"must be true, false or a mapping such as {options().model_dump()}")


ADDED_FIELDS: dict[tuple[str, str], Any] = {
    ("cv", "repeats"): 1, ("cv", "group_column"): None, ("model", "pooling"): None, ("data", "unlabeled"): None,
    ("data", "unlabeled_column"): None, ("data", "max_unlabeled_samples"): None, ("data", "deduplicate"): False,
}
"""Fields of the hashed sections (:meth:`StudySpec.search_hash`) added after studies existed, with their defaults."""


class StudySpec(_Section):
    """A whole study: what to fine-tune on, how to score, what to search, where to store it."""

    name: str = Field(min_length=1, max_length=200)
    data: DataSpec
    model: ModelSpec = ModelSpec()
    cv: CVSpec = CVSpec()
    search_space: dict[str, Distribution] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    study: StudyOptions = StudyOptions()
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    cache_dir: str | None = Field(None, description="on-disk cache (None: .hft_cache beside the storage or spec)")
    version: int = Field(SPEC_FORMAT_VERSION, ge=1, description="spec format; a newer one is refused")
    provenance: Annotated[dict[str, Any] | None, MASKED] = Field(
        None, description="written by `hft-search export`; informational (its URLs are secrets)")

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value > SPEC_FORMAT_VERSION:
            raise ValueError(f"format {value} is newer than this hft-search reads ({SPEC_FORMAT_VERSION}): "
                             f"upgrade hft-search, or write version: {SPEC_FORMAT_VERSION}")
        return value

    def enabled_groups(self) -> dict[str, bool | None]:
        """Each switchable group → True/False when decided by the spec, None when the search decides."""
        decided: dict[str, bool | None] = {}
        for group in SWITCHABLE_GROUPS:
            key = f"{group}.enabled"
            if key in self.search_space:
                decided[group] = None
            elif key in self.fixed:
                decided[group] = bool(self.fixed[key])
            else:
                named = [k for k in (*self.search_space, *self.fixed) if k.startswith(group + ".")]
                decided[group] = bool(named)
        return decided

    def max_epochs(self) -> int:
        """The most epochs a fold can train: ``training.epochs`` fixed, the top of its range, or the default."""
        dist = self.search_space.get("training.epochs")
        if isinstance(dist, CategoricalDist):
            return int(max(dist.choices))
        if dist is not None:
            return int(dist.bounds[1])
        return int(self.fixed.get("training.epochs", TrainingConfig.model_fields["epochs"].default))

    def search_hash(self) -> str:
        """A hash of what makes trials comparable (data, model, cv, search space, fixed knobs): a study may
        only be resumed with a spec of the same hash. ``model.family`` is left out: it is read from the model,
        so a spec that names it describes the same trials as one that does not."""
        payload = self.model_dump(mode="json", include={"data", "model", "cv", "search_space", "fixed"},
                                  exclude={"model": {"family"}})
        # Fields added later count only when set, so that a study made before them keeps its hash and resumes.
        for (section, key), default in ADDED_FIELDS.items():
            if payload[section][key] == default:
                del payload[section][key]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The spec as a runnable YAML file, its storage URLs as given (password included: the file must run);
        every other dump masks them (:data:`SecretUrl`)."""
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True, context={REVEAL_SECRETS: True})
        return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------------------------
# Loading and validation.
# --------------------------------------------------------------------------------------------------------------


def _pydantic_issues(error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[SpecIssue]:
    issues = []
    for item in error.errors():
        loc = [str(part) for part in (*prefix, *item["loc"]) if part not in ("function-after[_check()]",)]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; remove it or check its spelling"
        issues.append(SpecIssue(".".join(loc), message))
    return issues


def _parse_distribution(raw: Any) -> Distribution:
    if not isinstance(raw, Mapping):
        raise ValueError("must be a mapping such as {float: [1e-5, 1e-3], log: true}")
    kinds = [kind for kind in _DIST_KINDS if kind in raw]
    if len(kinds) != 1:
        raise ValueError("needs exactly one of `float: [low, high]`, `int: [low, high]` or `categorical: [...]`")
    return _DIST_KINDS[kinds[0]].model_validate(dict(raw))


def _knob_value(name: str, value: Any) -> Any:
    """``value`` as knob ``name`` holds it after validation."""
    group, field = name.split(".", 1)
    return getattr(GROUPS[group].model_validate({field: value}), field)


def _check_knob_value(name: str, value: Any) -> str | None:
    """Why ``value`` is not valid for knob ``name``, or None when it is."""
    group, field = name.split(".", 1)
    try:
        GROUPS[group].model_validate({field: value})
    except ValidationError as error:
        return "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
    return None


def _check_knobs(raw_space: Mapping[str, Any], raw_fixed: dict[str, Any]) -> tuple[dict, list[SpecIssue]]:
    """Validate ``search_space`` and ``fixed`` knob by knob, collecting every problem; valid ``fixed`` values
    are replaced by their validated form."""
    valid = set(knob_names())
    listing = ", ".join(sorted(valid))
    space: dict[str, Distribution] = {}
    issues: list[SpecIssue] = []
    for section, entries in (("search_space", raw_space), ("fixed", raw_fixed)):
        for name, raw in entries.items():
            path = f"{section}.{name}"
            if name not in valid:
                issues.append(SpecIssue(path, f"unknown knob; valid knobs are: {listing}"))
                continue
            if section == "fixed":
                if name in raw_space:
                    issues.append(SpecIssue(path, "is both searched and fixed; keep one"))
                elif (why := _check_knob_value(name, raw)) is not None:
                    issues.append(SpecIssue(path, why))
                else:  # the validated value: YAML reads `5e-5` (no dot) as a string, pydantic makes it a float
                    raw_fixed[name] = _knob_value(name, raw)
                continue
            try:
                dist = _parse_distribution(raw)
            except ValidationError as error:
                issues.extend(_pydantic_issues(error, (section, name)))
                continue
            except ValueError as error:
                issues.append(SpecIssue(path, str(error)))
                continue
            for endpoint in dist.endpoints():
                if (why := _check_knob_value(name, endpoint)) is not None:
                    issues.append(SpecIssue(path, f"value {endpoint!r} is out of range: {why}"))
                    break
            else:
                space[name] = dist
    return space, issues


PRUNER_MIN_FOLDS: dict[str, tuple[int, str]] = {
    "wilcoxon": (5, "the Wilcoxon signed-rank test (p < 0.1) cannot reject with fewer paired fold scores"),
}
"""Pruners that can only ever prune with enough folds: the least number of folds, and why. A new pruner
with such a limit adds one entry here."""

METRIC_GOALS: dict[str, str] = {
    "accuracy": "maximize", "f1_macro": "maximize", "f1": "maximize", "mcc": "maximize", "roc_auc": "maximize",
}
"""The direction in which each ``cv.metric`` improves; ``study.direction`` must agree with it."""


def _section(spec: StudySpec, name: str) -> str:
    return "search_space" if name in spec.search_space else "fixed"


def _always_zero(spec: StudySpec, name: str) -> bool:
    """Whether the spec pins a numeric knob to 0 (fixed 0, or explicitly neither searched nor fixed ⇒ default)."""
    bounds = knob_range(spec, name)
    if bounds is None:
        return name not in spec.search_space and knob_default(name) == 0
    return bounds[1] == 0


def _cross_checks(spec: StudySpec) -> list[SpecIssue]:
    """Rules that span knobs: combinations that could never run, or whose knobs could never act."""
    issues = []
    options = spec.study
    if options.sampler == "nsga2" and options.objectives == "score":
        issues.append(SpecIssue("study.sampler", "nsga2 is for multi-objective studies; set study.objectives"))
    if options.sampler == "grid":
        bad = [k for k, d in spec.search_space.items() if isinstance(d, FloatDist) and d.step is None]
        if bad:
            issues.append(SpecIssue("study.sampler", "grid needs categorical, int or stepped float knobs; "
                                    f"give a step to: {', '.join(bad)}"))
    if spec.study.sampler == "grid" and (spec.study.enqueue or spec.study.warm_start):
        issues.append(SpecIssue("study.sampler", "the grid sampler runs only its own grid points; remove "
                                "study.enqueue and study.warm_start, or use another sampler"))
    valid = set(knob_names())
    for index, entry in enumerate(spec.study.enqueue):
        for name, value in entry.items():
            path = f"study.enqueue.{index}.{name}"
            if name not in valid:
                issues.append(SpecIssue(path, "unknown knob; use dotted knob names such as training.learning_rate"))
            elif name not in spec.search_space:
                issues.append(SpecIssue(path, "is not searched by this spec (only search_space knobs can be "
                                        "enqueued); add it to search_space or drop it"))
            elif (why := out_of_range(spec.search_space[name], value)) is not None:
                issues.append(SpecIssue(path, why))
    for key in spec.search_space:
        if key.endswith(".enabled") and not isinstance(spec.search_space[key], CategoricalDist):
            issues.append(SpecIssue(f"search_space.{key}", "a group switch must be {categorical: [true, false]}"))
    if spec.provenance is None:  # an exported spec pins a configuration that was scored: it is fit as it is
        issues += _contradictions(spec)
    return issues


def _contradictions(spec: StudySpec) -> list[SpecIssue]:
    """Settings that each make sense alone but together leave a knob without effect or a trial without a point.

    Only settings the spec decides are judged (a group switch that the search decides is never contradictory:
    the trials where it is off simply ignore its knobs). Each message names the fields and the fix.
    """
    issues = []
    on = spec.enabled_groups()
    options = spec.study
    needed = PRUNER_MIN_FOLDS.get(options.pruner)
    if needed is not None and spec.cv.folds < needed[0]:
        issues.append(SpecIssue("study.pruner", f"{options.pruner} with cv.folds={spec.cv.folds} can never prune: "
                                f"{needed[1]}; use cv.folds >= {needed[0]}, or pruner: median or none"))
    goal = METRIC_GOALS[spec.cv.metric]
    if options.direction != goal:
        issues.append(SpecIssue("study.direction", f"{options.direction} contradicts cv.metric "
                                f"{spec.cv.metric!r}, which is better when higher; use direction: {goal}"))
    if options.objectives == "score+student_params" and on["distill"] is False:
        issues.append(SpecIssue("study.objectives", "score+student_params needs distillation to vary the "
                                "student's size, but the distill group is off; switch it on (search "
                                "distill.student_layers) or use objectives: score"))
    for group, decided in on.items():
        knobs = [k for k in (*spec.search_space, *spec.fixed) if k.startswith(group + ".") and k != f"{group}.enabled"]
        if decided is False and knobs:
            issues.append(SpecIssue(f"fixed.{group}.enabled", f"is false, so {', '.join(knobs)} never act; "
                                    f"remove them or switch the group on"))
    if on["distill"] is not False and _always_zero(spec, "distill.alpha") and _always_zero(spec, "distill.beta"):
        issues.append(SpecIssue("distill.alpha", "distill.alpha and distill.beta are both 0: the loss is 0 and "
                                "nothing trains; give one of them a positive value"))
    fine_tune_knobs = [k for k in (*spec.search_space, *spec.fixed) if k.startswith("distill.teacher_")]
    if spec.fixed.get("distill.teacher") is not None and fine_tune_knobs:
        issues.append(SpecIssue(f"{_section(spec, fine_tune_knobs[0])}.{fine_tune_knobs[0]}",
                                f"{', '.join(fine_tune_knobs)} only apply when the teacher is fine-tuned, but "
                                "distill.teacher gives a checkpoint; remove one or the other"))
    if on["lora"] is True and on["freeze"] is False and on["importance"] is True:
        issues.append(SpecIssue("importance.enabled", "LoRA without freeze leaves only the adapters and the "
                                "head trainable, and importance never selects among those, so it has nothing to "
                                "select; switch freeze on (LoRA then adapts the frozen blocks and importance "
                                "masks the others) or switch importance off"))
    if on["lora"] is True and on["freeze"] is True and knob_range(spec, "freeze.layers") in (None, (0, 0)):
        issues.append(SpecIssue("freeze.layers", "is 0 in every trial, and with freeze on LoRA adapts the frozen "
                                "blocks only: no adapter would be added; let freeze.layers be 1 or more, or "
                                "switch freeze off (LoRA then adapts every block)"))
    if spec.data.unlabeled is not None and on["distill"] is False:
        issues.append(SpecIssue("data.unlabeled", "only the distillation student learns from unlabeled text (its "
                                "teacher labels it); switch distill on or remove data.unlabeled"))
    issues += _missing_teacher(spec)
    return issues


def _missing_teacher(spec: StudySpec) -> list[SpecIssue]:
    """A ``distill.teacher`` written as a local path (absolute, ``./``, ``../``, ``~``) must be a folder."""
    if "distill.teacher" in spec.search_space:
        values = spec.search_space["distill.teacher"].endpoints()
        section = "search_space"
    else:
        values, section = [spec.fixed.get("distill.teacher")], "fixed"
    issues = []
    for value in values:
        if isinstance(value, str) and value.startswith(("/", "./", "../", "~")) \
                and not Path(value).expanduser().is_dir():
            issues.append(SpecIssue(f"{section}.distill.teacher", f"teacher checkpoint folder {value} does not "
                                    "exist; check the path (relative paths start at the spec's folder) or drop "
                                    "the knob to fine-tune a teacher"))
    return issues


def out_of_range(dist: Distribution, value: Any) -> str | None:
    """Why ``value`` cannot be a value of ``dist`` (an enqueued or warm-started configuration), or None."""
    if isinstance(dist, CategoricalDist):
        return None if value in dist.choices else f"{value!r} is not one of {dist.choices}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if isinstance(dist, IntDist) and value != int(value):
        return f"{value!r} is not an integer"
    low, high = dist.bounds
    return None if low <= value <= high else f"{value!r} is outside [{low}, {high}]"


def knob_range(spec: StudySpec, name: str) -> tuple[Any, Any] | None:
    """The smallest and largest value a spec lets a numeric knob take, or None when it is not set."""
    if name in spec.search_space:
        values = [v for v in spec.search_space[name].endpoints() if isinstance(v, int | float)]
    elif name in spec.fixed and isinstance(spec.fixed[name], int | float):
        values = [spec.fixed[name]]
    else:
        return None
    return (min(values), max(values)) if values else None


def check_against_layers(spec: StudySpec, num_layers: int, *, max_positions: int | None = None,
                         hidden_size: int | None = None, block_modules: Sequence[str] | None = None,
                         source: str | None = None) -> None:
    """Reject knob values the model cannot honour, so that ``validate`` catches what every trial would fail on.

    Args:
        num_layers: the model's blocks (``freeze.layers``, ``distill.student_layers`` may not exceed it).
        max_positions: longest input the position embeddings allow (``model.max_length``); None: unlimited.
        hidden_size: the model's width (``lora.r`` above it adapts nothing more and costs more than full
            fine-tuning).
        block_modules: names of the modules inside one block; ``lora.targets`` must match one each.
        source: the spec file, named in the error.
    """
    issues = []
    limits = {"freeze.layers": (num_layers, "blocks"), "distill.student_layers": (num_layers, "blocks"),
              "training.reinit_layers": (num_layers, "blocks")}
    if hidden_size is not None:
        limits["lora.r"] = (hidden_size, "hidden size (a wider adapter is no low-rank update)")
    for name, (limit, what) in limits.items():
        bounds = knob_range(spec, name)
        if bounds is not None and bounds[1] > limit:
            issues.append(SpecIssue(f"{_section(spec, name)}.{name}",
                                    f"{bounds[1]} exceeds the model's {limit} {what}"))
    frozen, reinit = knob_range(spec, "freeze.layers"), knob_range(spec, "training.reinit_layers")
    # An exported spec pins what a trial ran: a sampled pair that overlapped re-initialised only the blocks above
    # the frozen ones (``training.loop.reinit_count``), and its final fit must do the same, not be refused.
    exported = spec.provenance is not None
    if (spec.enabled_groups()["freeze"] is True and frozen and reinit and frozen[0] + reinit[0] > num_layers
            and not exported):
        issues.append(SpecIssue(f"{_section(spec, 'training.reinit_layers')}.training.reinit_layers",
                                f"{reinit[0]} re-initialised + {frozen[0]} frozen blocks exceed the model's "
                                f"{num_layers} (frozen blocks are never re-initialised, so fewer would be); lower one "
                                "of them"))
    if max_positions is not None and spec.model.max_length > max_positions:
        issues.append(SpecIssue("model.max_length", f"{spec.model.max_length} exceeds the {max_positions} "
                                f"positions of model {spec.model.name!r}; use at most {max_positions}"))
    targets = spec.fixed.get("lora.targets")
    if block_modules is not None and isinstance(targets, list):
        for target in targets:
            if not any(name == target or name.endswith("." + target) for name in block_modules):
                leaves = sorted({name.rsplit(".", 1)[-1] for name in block_modules})
                issues.append(SpecIssue("fixed.lora.targets", f"{target!r} matches no module of a block; "
                                        f"modules there are: {', '.join(leaves)}"))
    if issues:
        raise SpecError(issues, source)


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("train", "test", "unlabeled"):
            value = data.get(key)
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                data[key] = str((base / value).resolve())
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        name = model["name"]
        if name.startswith(("./", "../")):
            model["name"] = str((base / name).resolve())
    fixed = raw.get("fixed")
    teacher = fixed.get("distill.teacher") if isinstance(fixed, dict) else None
    if isinstance(teacher, str) and teacher.startswith(("./", "../")):
        fixed["distill.teacher"] = str((base / teacher).resolve())
    study = raw.get("study") if isinstance(raw.get("study"), dict) else {}
    warm = study.get("warm_start") if isinstance(study.get("warm_start"), dict) else {}
    for holder in (study, warm):
        storage = holder.get("storage")
        for prefix in ("sqlite:///", "journal:"):
            if isinstance(storage, str) and storage.startswith(prefix):
                relative = storage.removeprefix(prefix)
                if relative and relative != ":memory:" and not relative.startswith("/"):
                    holder["storage"] = prefix + str((base / relative).resolve())


def spec_from_dict(raw: Mapping[str, Any], base_dir: Path | str = ".", source: str | None = None) -> StudySpec:
    """Validate a spec given as a mapping; relative paths resolve against ``base_dir``.

    Raises :class:`SpecError` listing every problem at once.
    """
    if not isinstance(raw, Mapping):
        raise SpecError([SpecIssue("", "a spec must be a YAML mapping with `name`, `data`, ...")], source)
    raw = json.loads(json.dumps(dict(raw), default=str))  # deep copy; YAML dates become strings
    _resolve_paths(raw, Path(base_dir))
    raw_space = raw.pop("search_space", None) or {}
    raw_fixed = raw.pop("fixed", None) or {}
    issues: list[SpecIssue] = []
    for section, value in (("search_space", raw_space), ("fixed", raw_fixed)):
        if not isinstance(value, Mapping):
            issues.append(SpecIssue(section, "must be a mapping of dotted knob names"))
    if issues:
        raise SpecError(issues, source)
    space, issues = _check_knobs(raw_space, raw_fixed)
    try:
        spec = StudySpec.model_validate({**raw, "search_space": space, "fixed": raw_fixed})
    except ValidationError as error:
        issues.extend(_pydantic_issues(error))
        raise SpecError(issues, source) from None
    issues.extend(_cross_checks(spec))
    if issues:
        raise SpecError(issues, source)
    return spec


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps the last one silently,
    so a spec with two ``study:`` sections would run with half of what its author wrote."""


class _DuplicateKeyError(yaml.YAMLError):
    pass


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: keys written here override merged ones
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.setdefault(key, line)
        except TypeError:  # an unhashable key: the constructor below refuses it with its own message
            continue
        if first != line:
            raise _DuplicateKeyError(f"key {key!r} appears twice in one mapping (lines {first} and {line}); "
                                     "keep one")
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_spec_document(path: str | Path) -> Any:
    """The YAML (or JSON) document of a spec file, before validation.

    YAML is safe-loaded (no Python objects) and a key repeated in one mapping is refused, the file is at most
    :data:`MAX_SPEC_BYTES` and the document at most :data:`MAX_SPEC_VALUES` values once its aliases are
    expanded: a spec is input from anyone who can write to the studies folder, and must not be able to
    exhaust the memory of every worker that loads it.
    """
    path = Path(path)

    def problem(message: str) -> SpecError:
        return SpecError([SpecIssue("", message)], str(path))

    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise problem(f"spec file {path} {what}; check the path")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise problem(f"is {path.stat().st_size} bytes, more than a spec's limit of {MAX_SPEC_BYTES}; "
                      "is it the right file?")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise problem(f"is not UTF-8 text (byte {error.start}); re-save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKeyError as error:
        raise problem(str(error)) from None
    except yaml.YAMLError as error:
        raise problem(f"not valid YAML: {' '.join(str(error).split())}") from None
    if _expanded_size(raw, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
        raise problem(f"expands to more than {MAX_SPEC_VALUES} values (YAML aliases nested in aliases?); "
                      "write the spec out without them")
    return raw


def load_spec(path: str | Path) -> StudySpec:
    """Read (:func:`read_spec_document`) and validate a YAML (or JSON) spec file; its relative paths resolve
    against the file's folder."""
    path = Path(path)
    return spec_from_dict(read_spec_document(path), base_dir=path.resolve().parent, source=str(path))


def _expanded_size(document: Any, limit: int) -> int:
    """How many values ``document`` holds with every alias expanded, counting no further than ``limit + 1``.

    ``yaml.safe_load`` shares aliased objects, so loading is cheap; walking (or copying, as validation does)
    visits each alias in full. The walk stops as soon as it passes ``limit``, so it is cheap too.
    """
    count, stack = 0, [document]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return count


def grid_values(dist: Distribution) -> list[Any]:
    """Every value a grid sampler visits for one knob (int and stepped float ranges enumerated)."""
    if isinstance(dist, CategoricalDist):
        return list(dist.choices)
    low, high = dist.bounds
    step = dist.step or 1
    count = int(math.floor((high - low) / step + 1e-9)) + 1
    return [type(low)(low + i * step) if isinstance(dist, IntDist) else low + i * step for i in range(count)]
