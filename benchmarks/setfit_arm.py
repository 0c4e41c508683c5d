"""The SetFit arm (issue 20): what users pick instead when labels are few, on the search-quality benchmark's rows.

SetFit (Tunstall et al. 2022; PyPI ``setfit``, ``pip install "hft_search[bench]"``) fine-tunes a
sentence-transformers body contrastively on pairs of labelled sentences, then fits a logistic-regression head on
its embeddings. The packaged MiniLM is such a body. This arm uses SetFit's documented defaults
(``TrainingArguments()``: batch size 16, body rate 2e-5, oversampled pairs, cosine-similarity loss, a frozen body
under a scikit-learn head) with two exceptions, both recorded in the JSON:

* ``max_steps``: the default draws every oversampled pair once — for 800 balanced rows 2 × 160,000 pairs, 20,000
  steps, hours on a CPU. The arm caps the steps (``Sizes.max_steps``) so that the body sees about as many
  sentences as a search-quality method's budget (``full``: 500 steps × 16 pairs × 2 sentences = 16,000, against
  30 fold-epochs × 533 rows = 16,000 for a search), and records the step count the default would have run;
* ``max_length``: the search-quality benchmark's, so that every arm reads the same tokens.

:func:`setfit_arm` takes the very rows, dev split and seed that ``benchmarks/search_quality.py`` uses, so that
benchmark can put SetFit's dev accuracy next to (a) and (d); :func:`run` runs it alone at that benchmark's sizes.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks._common import Context, check
from hft_search.data import TextSplit, load_data
from hft_search.models import resolve_source
from hft_search.spec import DataSpec


@dataclass(frozen=True)
class Sizes:
    max_steps: int  # body steps (batches of 16 pairs); see the module docstring


SIZES = {"full": Sizes(max_steps=500), "cpu": Sizes(max_steps=500), "gpu": Sizes(max_steps=1500),
         "quick": Sizes(max_steps=60), "smoke": Sizes(max_steps=4)}
INSTALL = 'pip install "hft_search[bench]"  (setfit)'


def default_steps(labels: np.ndarray, batch_size: int = 16) -> int:
    """Steps SetFit's default (``sampling_strategy="oversampling"``, one epoch) would run: twice the larger of
    the positive and negative pair counts, in batches."""
    counts = np.bincount(labels)
    positive = int(sum(c * (c - 1) // 2 for c in counts))
    negative = int(len(labels) * (len(labels) - 1) // 2 - positive)
    return math.ceil(2 * max(positive, negative) / batch_size)


def setfit_arm(rows: TextSplit, dev: TextSplit, seed: int, *, model: str = "minilm", max_steps: int = 500,
               max_length: int | None = None) -> dict[str, Any]:
    """Train SetFit on ``rows`` (labelled), score ``dev``; ``{"dev_accuracy", "seconds", ...}``."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    start = time.perf_counter()
    body = SetFitModel.from_pretrained(resolve_source(model))
    with tempfile.TemporaryDirectory(prefix="setfit-") as scratch:
        args = TrainingArguments(output_dir=scratch, seed=seed, max_steps=max_steps, max_length=max_length,
                                 show_progress_bar=False, save_strategy="no")
        trainer = Trainer(model=body, args=args,
                          train_dataset=Dataset.from_dict({"text": rows.texts, "label": rows.labels.tolist()}))
        trainer.train()
    predicted = np.asarray(body.predict(dev.texts, show_progress_bar=False))
    return {"dev_accuracy": float((predicted == dev.labels).mean()), "dev_rows": len(dev), "rows": len(rows),
            "seed": seed, "max_steps": max_steps, "default_steps": default_steps(rows.labels),
            "max_length": max_length, "seconds": time.perf_counter() - start}


def run(ctx: Context) -> dict[str, Any]:
    from benchmarks.search_quality import BASELINE_LEARNS
    from benchmarks.search_quality import SIZES as SEARCH_SIZES

    try:
        import setfit
    except ImportError:
        return {"skipped": f"setfit is not installed: {INSTALL}", "sizes": ctx.sizes(SIZES), "targets": []}
    sizes, search = ctx.sizes(SIZES), ctx.sizes(SEARCH_SIZES)
    # The rows and dev split search_quality's studies read (bench_spec: seed-0 stratified samples).
    data = load_data(DataSpec(train=str(ctx.train), test=str(ctx.dev), max_train_samples=search.rows,
                              max_test_samples=search.dev_rows))
    print(f"SetFit {setfit.__version__}: {len(data.train)} rows, dev {len(data.test)}, seeds {list(search.seeds)}, "
          f"{sizes.max_steps} steps (the default would run {default_steps(data.train.labels)})", flush=True)
    runs = []
    for seed in search.seeds:
        runs.append(setfit_arm(data.train, data.test, seed, model=ctx.model, max_steps=sizes.max_steps,
                               max_length=search.max_length))
        print(f"  seed {seed}: dev accuracy {runs[-1]['dev_accuracy']:.4f} in {runs[-1]['seconds']:.0f} s",
              flush=True)
    median = float(np.median([r["dev_accuracy"] for r in runs]))
    return {"sizes": sizes, "search_quality_sizes": search, "setfit": setfit.__version__, "runs": runs,
            "median_dev_accuracy": median,
            "targets": [check("SetFit dev accuracy (median over seeds; the bar the tuned full fine-tune must clear)",
                              median, BASELINE_LEARNS, at_most=False,
                              detail=", ".join(f"{r['dev_accuracy']:.4f}" for r in runs))]}
