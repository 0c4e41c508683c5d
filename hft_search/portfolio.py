"""A small literature portfolio: configurations that published work recommends when labels are few, tried
right after the baseline (``study.portfolio: literature``, the default; ``false`` or ``none`` turns it off).

Why a portfolio: auto-sklearn's warm starts and Quick-Tune begin a search with configurations known to work
(meta-learned over many datasets) rather than with random ones, and win most of their early trials that way. Ours
is small and cited instead of meta-learned: each entry below is a paper's recipe, with its source.

How an entry becomes a trial: its knobs are filtered to the spec's search space exactly as a warm start's are
(:func:`hft_search.seeding.filter_params`: a knob the spec does not search is dropped, an out-of-range value is
skipped with a warning and left to the sampler). An entry whose *defining* knobs (what makes it that paper's
recipe) are all gone is not enqueued at all: what is left would be a different configuration with a citation it
has not earned. Knobs an entry leaves out are sampled as usual. Portfolio trials are ordinary enqueued trials:
they count towards ``n_trials`` and record ``enqueued: portfolio:NAME``; at most half of ``n_trials`` go to the
portfolio (the first entries, in the order below), so the sampler always keeps half of the budget.

Learning rates are the full fine-tune's rate, as ``training.learning_rate`` always is here: configurations that
train fewer parameters run at a multiple of it (``training.max_lr_multiplier``), which puts LoRA at the 10×
larger rates its papers use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hft_search.spec import StudySpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    name: str
    params: dict[str, Any]
    defining: tuple[str, ...]  # at least one of these must survive the filter


LITERATURE: tuple[Entry, ...] = (
    # Mosbach et al. 2021, "On the stability of fine-tuning BERT" (ICLR): small rate, warm-up, bias-corrected
    # AdamW, and many more epochs than the usual 3 on small datasets (they train 20).
    Entry("mosbach2021_long", {"training.learning_rate": 2e-5, "training.warmup_ratio": 0.1, "training.epochs": 20},
          ("training.epochs",)),
    # Zhang et al. 2021, "Revisiting few-sample BERT fine-tuning" (ICLR): re-initialise the top blocks (and the
    # pooler); their gains at few samples come with top 1-6 blocks of BERT-large, fewer for a base model.
    Entry("zhang2021_reinit", {"training.reinit_layers": 2, "training.learning_rate": 2e-5},
          ("training.reinit_layers",)),
    # Layer-wise learning-rate decay: Howard & Ruder 2018 (ULMFiT), Clark et al. 2020 (ELECTRA), studied at few
    # samples by Zhang et al. 2021; 0.9 is AutoGluon MultiModal's default optim.lr_decay.
    Entry("llrd_0.9", {"training.layer_lr_decay": 0.9}, ("training.layer_lr_decay",)),
    # Hu et al. 2021, LoRA (ICLR 2022), RoBERTa-base on GLUE: r = 8, alpha = 8, rate 5e-4 (here 5e-5 × the
    # trainable-fraction multiplier).
    Entry("lora_hu2021", {"lora.enabled": True, "lora.r": 8, "lora.alpha": 8.0, "training.learning_rate": 5e-5},
          ("lora.enabled", "lora.r")),
    # Hayou et al. 2024, LoRA+ (ICML): B at lambda = 2^4 times the rate of A; adapters on every linear layer,
    # which Dettmers et al. 2023 (QLoRA) found needed to match full fine-tuning.
    Entry("loraplus_all_linear", {"lora.enabled": True, "lora.r": 8, "lora.lr_ratio": 16.0,
                                  "lora.targets": "all-linear"}, ("lora.lr_ratio", "lora.targets")),
    # Liu et al. 2024, DoRA (ICML): weight-decomposed LoRA, ahead of LoRA at equal rank, on every linear layer.
    Entry("dora_all_linear", {"lora.enabled": True, "lora.variant": "dora", "lora.r": 8,
                              "lora.targets": "all-linear"}, ("lora.variant",)),
    # Sun et al. 2019, PKD (EMNLP): hidden-state loss on the normalised pooled states, beta in {10, 100, 500,
    # 1000} (100 here), T in {5, 10, 20}, alpha 0.5 of their grid; the student starts from the bottom blocks.
    Entry("pkd_sun2019", {"distill.enabled": True, "distill.hidden_weight": 100.0, "distill.temperature": 5.0,
                          "distill.alpha": 0.5, "distill.beta": 0.5, "distill.student_init": "bottom"},
          ("distill.hidden_weight",)),
    # Sanh et al. 2019, DistilBERT: the student starts from every other teacher block, T = 2.
    Entry("distilbert_init", {"distill.enabled": True, "distill.student_init": "alternate",
                              "distill.temperature": 2.0}, ("distill.student_init",)),
)
"""The ``literature`` portfolio, in the order its trials are enqueued."""

PORTFOLIOS: dict[str, tuple[Entry, ...]] = {"literature": LITERATURE}


def portfolio_params(spec: StudySpec) -> list[tuple[str, dict[str, Any]]]:
    """(``portfolio:NAME``, filtered params) of every entry of the spec's portfolio that keeps a defining knob."""
    from hft_search.seeding import filter_params

    if spec.study.portfolio == "none" or spec.study.sampler == "grid":
        return []
    picked: list[tuple[str, dict[str, Any]]] = []
    for entry in PORTFOLIOS[spec.study.portfolio]:
        source = f"portfolio:{entry.name}"
        if not any(knob in spec.search_space for knob in entry.defining):
            logger.info("%s: the spec does not search %s; not enqueued", source, " or ".join(entry.defining))
            continue
        params = filter_params(spec, entry.params, source)
        if not any(knob in params for knob in entry.defining):
            logger.warning("%s: %s out of this spec's range; not enqueued", source, " and ".join(entry.defining))
        elif all(params != earlier for _, earlier in picked):
            picked.append((source, params))
    room = spec.study.n_trials // 2
    if len(picked) > room:
        logger.info("study.portfolio: %d of %d entries enqueued (at most half of n_trials=%d, the rest is the "
                    "sampler's): %s left out", room, len(picked), spec.study.n_trials,
                    ", ".join(source for source, _ in picked[room:]))
    return picked[:room]
