"""The architecture registry: where each supported family keeps its embeddings, blocks and head.

The strategies need "the embeddings", "the transformer blocks" and "the classification head" of a model, and
each family keeps them under different attribute names. Supporting a new family means adding one
:class:`Family` entry to :data:`FAMILIES`, keyed by the ``model_type`` of its config; nothing else in the
project names an attribute of a particular architecture.

Encoders (BERT, RoBERTa, DistilBERT, DeBERTa-v2) pool the first token through their own head. Decoders (GPT-2,
Llama, Qwen2, Qwen3, Mistral) are used through ``AutoModelForSequenceClassification`` as ``*ForSequence
Classification``: a bias-free linear ``score`` on the hidden state of the *last non-pad token*, which
transformers finds as the rightmost position whose id is not ``config.pad_token_id`` (so the pad id must be
set: see :func:`hft_search.models.classifier_tokenizer`). What else differs for decoders is handled where it
matters: no token-type ids (the same function), positions counted from each row's first token
(``hft_search.data``), and no tied output embedding (the classification model has no LM head, so freezing the
input embedding freezes nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from hft_search.exceptions import ModelError
from hft_search.pooling import PREFIX as POOLED_PREFIX

ATTENTION_AND_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Projection names shared by the Llama-style decoders (Llama, Qwen2, Qwen3, Mistral)."""


@dataclass(frozen=True)
class Family:
    """Where one architecture family keeps its parts (attribute paths from the classification model)."""

    label: str  # how people name the family, for messages
    embeddings: tuple[str, ...]
    blocks: str
    head: tuple[str, ...]
    new_head: tuple[str, ...]  # modules the classification model adds (re-initialised per trial)
    lora_targets: tuple[str, ...]  # default ``lora.targets``: module-name suffixes inside a block
    decoder: bool = False
    layers_config_key: str = "num_hidden_layers"


def _llama_like(label: str) -> Family:
    return Family(label, ("model.embed_tokens",), "model.layers", ("score",), ("score",), ATTENTION_AND_MLP,
                  decoder=True)


FAMILIES: dict[str, Family] = {
    "bert": Family("BERT", ("bert.embeddings",), "bert.encoder.layer", ("bert.pooler", "classifier"),
                   ("classifier",), ("query", "key", "value")),
    "roberta": Family("RoBERTa", ("roberta.embeddings",), "roberta.encoder.layer", ("classifier",),
                      ("classifier",), ("query", "key", "value")),
    "xlm-roberta": Family("XLM-RoBERTa", ("roberta.embeddings",), "roberta.encoder.layer", ("classifier",),
                          ("classifier",), ("query", "key", "value")),
    "distilbert": Family("DistilBERT", ("distilbert.embeddings",), "distilbert.transformer.layer",
                         ("pre_classifier", "classifier"), ("pre_classifier", "classifier"),
                         ("q_lin", "k_lin", "v_lin"), layers_config_key="n_layers"),
    "deberta-v2": Family("DeBERTa-v2", ("deberta.embeddings",), "deberta.encoder.layer", ("pooler", "classifier"),
                         ("pooler", "classifier"), ("query_proj", "key_proj", "value_proj")),
    # GPT-2's projections are transformers' Conv1D (a transposed linear); peft adapts them (fan_in_fan_out).
    "gpt2": Family("GPT-2", ("transformer.wte", "transformer.wpe"), "transformer.h", ("score",), ("score",),
                   ("c_attn", "c_proj", "c_fc"), decoder=True, layers_config_key="n_layer"),
    "llama": _llama_like("Llama"),
    "qwen2": _llama_like("Qwen2"),
    "qwen3": _llama_like("Qwen3"),
    "mistral": _llama_like("Mistral"),
}
"""``config.model_type`` → where its parts are. Qwen3 works with transformers versions that have it."""


def supported() -> str:
    """The supported ``model_type`` values, for messages."""
    return ", ".join(sorted(FAMILIES))


def family_name(config: object) -> str:
    """The registry key of a model config (its ``model_type``; a pooled model's ``hft_pooled_<family>`` is its
    family, see :mod:`hft_search.pooling`), or a :class:`ModelError` naming the supported."""
    model_type = getattr(config, "model_type", None)
    if isinstance(model_type, str):
        model_type = model_type.removeprefix(POOLED_PREFIX)
    if model_type not in FAMILIES:
        raise ModelError(f"architecture {model_type!r} is not supported; supported families: {supported()}. "
                         "Pick a model of one of these families.")
    return model_type


def family_of(model: nn.Module) -> Family:
    return FAMILIES[family_name(getattr(model, "config", None))]


def get_module(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


@dataclass(frozen=True)
class ModelLayers:
    """The parts of a sequence-classification model that the strategies address."""

    embeddings: tuple[nn.Module, ...]
    blocks: nn.ModuleList
    head: tuple[nn.Module, ...]
    family: Family = field(repr=False)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def head_parameter_names(self, model: nn.Module) -> set[str]:
        """Qualified names (as in ``model.named_parameters()``) of the parameters of the head."""
        ids = {id(p) for module in self.head for p in module.parameters()}
        return {name for name, p in model.named_parameters() if id(p) in ids}


def layers_of(model: nn.Module) -> ModelLayers:
    """Embeddings, transformer blocks and head of a supported model (also under a peft wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    fam = family_of(base)
    head = tuple(m for m in (get_module(base, path) for path in fam.head) if m is not None)  # a pooler may be None
    return ModelLayers(tuple(get_module(base, path) for path in fam.embeddings), get_module(base, fam.blocks),
                       head, fam)


def truncate(model: nn.Module, num_layers: int) -> nn.Module:
    """Keep only the bottom ``num_layers`` blocks, in place (:func:`select_blocks` of ``0 .. num_layers-1``)."""
    return select_blocks(model, list(range(num_layers)))


def select_blocks(model: nn.Module, indices: list[int]) -> nn.Module:
    """Keep only the blocks at ``indices`` (ascending), in place; the config says so too.

    The result is a real smaller model: ``save_pretrained`` writes only the kept blocks and
    ``from_pretrained`` rebuilds the same architecture from its config. Per-layer config lists
    (``layer_types`` of Qwen2/Qwen3/Mistral: full or sliding-window attention) keep the entries of the kept
    blocks, or the config would no longer validate when loaded; attention modules are renumbered
    (``layer_idx``), as a model built from that config numbers them.
    """
    layers = layers_of(model)
    total = layers.num_layers
    if not indices or sorted(set(indices)) != list(indices) or indices[0] < 0 or indices[-1] >= total:
        raise ModelError(f"cannot keep blocks {indices} of a {total}-layer model")
    parent_path, attr = layers.family.blocks.rsplit(".", 1)
    kept = [layers.blocks[i] for i in indices]
    for position, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    setattr(get_module(model, parent_path), attr, nn.ModuleList(kept))
    setattr(model.config, layers.family.layers_config_key, len(indices))
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = [model.config.layer_types[i] for i in indices]
    return model


def block_linear_names(layers: ModelLayers) -> list[str]:
    """Module-name suffixes of the linear projections inside a block: the valid ``lora.targets``."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in layers.blocks[0].named_modules()
                   if name and is_projection(module)})


def is_projection(module: nn.Module) -> bool:
    """``nn.Linear``, or transformers' ``Conv1D`` (GPT-2's transposed linear), which peft also adapts."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
