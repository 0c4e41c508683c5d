"""Pooling: which token states a sequence classifier reads, ``cls`` (the first token), ``mean`` or ``last``.

Why a knob: every Hugging Face ``*ForSequenceClassification`` reads one position: encoders the first token
(``[CLS]``, through a pooler or a head), decoders the last non-pad token. A sentence-transformers checkpoint
such as the packaged all-MiniLM-L6-v2 was trained to be read as the *mean* of its token states
(``1_Pooling/config.json``: ``pooling_mode_mean_tokens``); a ``[CLS]`` head on it throws that training away.

How a pooling other than the architecture's own is applied: the model becomes an instance of a subclass of its
own class (:func:`pooled_classes`, one per family: ``HftPooledBertForSequenceClassification`` ...) that adds no
parameter. Its ``forward`` hands the attention mask to a pre-hook on the module that reads the token states
(``config.hft_pooling["read"]``: BERT's pooler, RoBERTa's classification head, DeBERTa's pooler, a decoder's
``score``), and the hook puts the pooled state where that module reads: position 0 for an encoder, every
position for a decoder (which then picks its last real token). Everything else (heads, names, LoRA, freezing)
is the architecture's own.

Why this file imports nothing of ``hft_search``: ``save_pretrained`` copies it into the model folder
(``register_for_auto_class``) and writes ``auto_map`` and ``model_type: hft_pooled_<family>`` into
``config.json``. So a plain ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)``
builds the same model and gives the same logits; without ``trust_remote_code`` transformers refuses the folder
with its own message ("contains custom code ... pass trust_remote_code=True") instead of silently reading the
first token. In a process that imported ``hft_search``, the classes are registered and load without it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

POOLINGS = ("cls", "mean", "last")
PREFIX = "hft_pooled_"
"""``model_type`` of a saved model with a pooling other than its architecture's: ``hft_pooled_<family>``."""

READS: dict[str, tuple[str | None, str]] = {
    "bert": ("bert.pooler", "cls"),
    "roberta": ("classifier", "cls"),
    "xlm-roberta": ("classifier", "cls"),
    "distilbert": (None, "cls"),  # reads hidden[:, 0] inline, with no module to hook: cls only
    "deberta-v2": ("pooler", "cls"),
    "gpt2": ("score", "last"),
    "llama": ("score", "last"),
    "qwen2": ("score", "last"),
    "qwen3": ("score", "last"),
    "mistral": ("score", "last"),
}
"""Family (``model_type``) → (the module whose input is the token states its head reads, the native pooling)."""


def pool_states(hidden: torch.Tensor, attention_mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """[batch, tokens, width] → [batch, width]: the first token, the masked mean (sentence-transformers'
    ``mean_tokens``), or the last real token (rows are padded on the right)."""
    if mode == "cls":
        return hidden[:, 0]
    mask = (torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None
            else attention_mask[:, :hidden.shape[1]])
    if mode == "mean":  # in float32: a bf16 count of tokens is inexact beyond 256
        weights = mask.float().unsqueeze(-1)
        return ((hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)).to(hidden.dtype)
    if mode == "last":
        last = (mask.sum(1).long() - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"model.pooling: {mode!r} is not one of {', '.join(POOLINGS)}")


def _substitute(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook of the reading module: the pooled state where the head reads (module docstring)."""
    setting = module.hft_pooling
    hidden = args[0]
    pooled = pool_states(hidden, module.hft_attention_mask, setting["mode"])
    if setting["native"] == "cls":
        hidden = torch.cat([pooled.unsqueeze(1), hidden[:, 1:]], dim=1)
    else:
        hidden = pooled.unsqueeze(1).expand_as(hidden)
    return (hidden, *args[1:])


class PooledMixin:
    """``forward`` passes the attention mask to the reading module's pre-hook (installed by :func:`install`)."""

    config: Any

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(getattr(config, "hft_pooling", None), dict):
            raise ValueError("a pooled classifier's config needs `hft_pooling` ({mode, read, native}); load it "
                             "from a folder written by hft_search")
        super().__init__(config, *args, **kwargs)
        install(self)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        reader = self.get_submodule(self.config.hft_pooling["read"])
        reader.hft_attention_mask = attention_mask
        try:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        finally:
            reader.hft_attention_mask = None


def install(model: nn.Module) -> nn.Module:
    """Hook the reading module of a model whose class is a pooled class and whose config says how it pools."""
    reader = model.get_submodule(model.config.hft_pooling["read"])
    if not getattr(reader, "hft_pooling", None):
        reader.hft_pooling = dict(model.config.hft_pooling)
        reader.hft_attention_mask = None
        reader.register_forward_pre_hook(_substitute)
    return model


def _camel(family: str) -> str:
    return "".join(part.capitalize() for part in family.replace("-", "_").split("_"))


_CLASS_NAMES = {f"HftPooled{_camel(f)}{suffix}": f for f in READS for suffix in ("Config", "ForSequenceClassification")}


@functools.cache
def pooled_classes(family: str) -> tuple[type, type]:
    """(config class, model class) of the pooled subclass of ``family``'s classifier, registered with the Auto
    classes (so a saved folder loads without ``trust_remote_code`` in this process). Built on first use: building
    them imports the family's modelling code."""
    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_MAPPING_NAMES,
    )

    read, _ = READS.get(family, (None, ""))
    model_name = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(family)
    if read is None or model_name is None or not hasattr(transformers, model_name):
        raise ValueError(f"model.pooling: the {family} family has no pooled classifier here; use its own "
                         f"pooling ({READS.get(family, (None, 'cls'))[1]})")
    config_cls = type(f"HftPooled{_camel(family)}Config", (transformers.CONFIG_MAPPING[family],),
                      {"model_type": PREFIX + family, "__module__": __name__})
    model_cls = type(f"HftPooled{_camel(family)}ForSequenceClassification",
                     (PooledMixin, getattr(transformers, model_name)),
                     {"config_class": config_cls, "__module__": __name__})
    config_cls.register_for_auto_class("AutoConfig")
    model_cls.register_for_auto_class("AutoModelForSequenceClassification")
    transformers.AutoConfig.register(PREFIX + family, config_cls, exist_ok=True)
    transformers.AutoModelForSequenceClassification.register(config_cls, model_cls, exist_ok=True)
    backbone = MODEL_MAPPING_NAMES.get(family)  # decoders build their backbone with AutoModel.from_config
    if backbone is not None and hasattr(transformers, backbone):
        backbone_cls = type(f"HftPooled{_camel(family)}Model", (getattr(transformers, backbone),),
                            {"config_class": config_cls, "__module__": __name__})
        transformers.AutoModel.register(config_cls, backbone_cls, exist_ok=True)
    return config_cls, model_cls


def register_saved(folder: str | Path) -> None:
    """Register the pooled classes a saved folder's ``config.json`` names, before ``from_pretrained`` reads it."""
    config = Path(folder) / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
        if isinstance(model_type, str) and model_type.startswith(PREFIX):
            pooled_classes(model_type.removeprefix(PREFIX))


def __getattr__(name: str) -> type:
    """The classes by name, for transformers' loader of the copy of this file in a saved folder (PEP 562)."""
    family = _CLASS_NAMES.get(name)
    if family is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    config_cls, model_cls = pooled_classes(family)
    return config_cls if name.endswith("Config") else model_cls
