"""Tiny random decoder LLMs of every supported family, saved with a tokenizer built from the test words.

Why this shape: two blocks and a 32-wide hidden state train a fold in well under a second on the CPU, yet keep
what differs from encoders: no pad token (so the EOS token must stand in), the last real token as the pooled
position, grouped-query attention (Llama-style) or Conv1D projections (GPT-2), per-layer config lists (Qwen2's
``layer_types``). Weights are saved in bf16, as decoder LLM checkpoints ship.
"""

from __future__ import annotations

import json
from pathlib import Path

import transformers

from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE

SPECIAL = ["<unk>", "<bos>", "<eos>"]
FAMILY_CONFIGS = {
    "gpt2": "GPT2Config",
    "llama": "LlamaConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "mistral": "MistralConfig",
}
"""Registry family → transformers config class; families the installed transformers lacks are left out."""
FAMILIES = [family for family, name in FAMILY_CONFIGS.items() if hasattr(transformers, name)]


def build_tokenizer(words: list[str]) -> transformers.PreTrainedTokenizerBase:
    """A lower-casing, whitespace-split word-level tokenizer; EOS but deliberately no pad token."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {token: i for i, token in enumerate([*SPECIAL, *sorted(set(words))])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<bos>",
                                                eos_token="<eos>")


def build_qwen2_tokenizer(words: list[str]) -> transformers.PreTrainedTokenizerBase:
    """A byte-level BPE trained on ``words``, as a ``Qwen2Tokenizer``.

    transformers loads a ``qwen2`` folder's tokenizer as ``Qwen2Tokenizer`` whatever class saved it, so the
    tiny one must be that class; like Qwen2.5's, its pad and EOS token are both ``<|endoftext|>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.train_from_iterator([" ".join(words)] * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    merges = [tuple(pair) for pair in json.loads(core.to_str())["model"]["merges"]]
    return transformers.Qwen2Tokenizer(vocab=core.get_vocab(), merges=merges)


def decoder_config(family: str, vocab_size: int, num_layers: int, bos: int, eos: int) -> transformers.PretrainedConfig:
    common = {"vocab_size": vocab_size, "bos_token_id": bos, "eos_token_id": eos, "num_labels": 2}
    if family == "gpt2":
        return transformers.GPT2Config(n_layer=num_layers, n_embd=32, n_head=4, n_positions=64, **common)
    return getattr(transformers, FAMILY_CONFIGS[family])(
        num_hidden_layers=num_layers, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, tie_word_embeddings=family == "qwen2",
        **common)  # Qwen2.5's small models tie their input and output embeddings


def build_tiny_decoder(folder: Path, family: str, num_layers: int = 2) -> Path:
    """A random ``family`` classifier and its tokenizer, saved with ``save_pretrained`` into ``folder``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    words = POSITIVE + NEGATIVE + NEUTRAL
    tokenizer = build_qwen2_tokenizer(words) if family == "qwen2" else build_tokenizer(words)
    tokenizer.save_pretrained(folder)
    config = decoder_config(family, len(tokenizer), num_layers, tokenizer.bos_token_id or tokenizer.eos_token_id,
                            tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    model.to(torch.bfloat16).save_pretrained(folder)
    return folder
