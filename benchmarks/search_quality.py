"""Search quality (issue 5): does the best hybrid configuration match a standard full fine-tune while
training at most 20 % of the parameters?

On SST-2 with the packaged MiniLM (full sizes: 2,000 training sentences, 3 folds, the whole dev split of 872):

(a) **full fine-tune** — the standard recipe: every parameter, learning rate 5e-5, 3 epochs;
(b) **hybrid** — a TPE study with a fixed trial budget over frozen blocks (the embeddings always frozen),
    a tensor-granularity importance mask keeping the top 5-20 % of what is left, optional LoRA adapters, and
    the learning rate. Its best trial is exported (``export_spec``) and fitted by ``train_final``, the same
    code path as ``hft-search export`` + ``hft-search train``.

Both are trained on the same training sentences and scored on the dev split; accuracy, trainable fraction
and wall time are reported side by side. To fit the suite's hour on two cores the search trains 1 epoch per
fold; the exported configuration is then fitted with the standard recipe's number of epochs, so that the two
final models differ by their hybrid knobs, not by how long they trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import Context, bench_spec, check, trial_seconds
from hft_search.export import export_spec, train_final
from hft_search.models import load_config, num_layers_in_config
from hft_search.spec import StudySpec
from hft_search.study import run_study


@dataclass(frozen=True)
class Sizes:
    rows: int
    dev_rows: int | None  # None: the whole dev split
    folds: int
    max_length: int
    search_epochs: int
    final_epochs: int  # of both final fits (the standard recipe's 3 in full)
    batch_size: int
    n_trials: int


SIZES = {
    "full": Sizes(rows=2000, dev_rows=None, folds=3, max_length=64, search_epochs=1, final_epochs=3,
                  batch_size=32, n_trials=8),
    "quick": Sizes(rows=300, dev_rows=200, folds=3, max_length=32, search_epochs=1, final_epochs=1,
                   batch_size=32, n_trials=3),
    "smoke": Sizes(rows=60, dev_rows=None, folds=2, max_length=16, search_epochs=1, final_epochs=1,
                   batch_size=16, n_trials=2),
}
FULL_LEARNING_RATE = 5e-5
MAX_TRAINABLE_FRACTION = 0.20


def search_space(num_layers: int) -> dict[str, Any]:
    """Every configuration of this space trains at most ~11 % of MiniLM (embeddings frozen, q ≥ 0.8)."""
    return {
        "training.learning_rate": {"float": [5e-5, 2e-3], "log": True},
        "freeze.layers": {"int": [0, num_layers - 2]},
        "importance.threshold": {"float": [0.8, 0.95]},
        "lora.enabled": {"categorical": [True, False]},
        "lora.r": {"int": [4, 16], "log": True},
    }


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    folder = ctx.folder("search_quality")
    print(f"search quality: {sizes.rows} training rows, dev {sizes.dev_rows or 'all'} rows, {sizes.folds} folds, "
          f"max_length {sizes.max_length}, batch {sizes.batch_size}; search: {sizes.n_trials} trials of "
          f"{sizes.search_epochs} epoch(s); final fits: {sizes.final_epochs} epoch(s)", flush=True)

    def spec(name: str, **kwargs: Any) -> StudySpec:
        return bench_spec(ctx, name, folder, rows=sizes.rows, max_length=sizes.max_length, folds=sizes.folds,
                          test=True, test_rows=sizes.dev_rows, **kwargs)

    full_spec = spec("quality-full", fixed={"training.learning_rate": FULL_LEARNING_RATE,
                                            "training.epochs": sizes.final_epochs,
                                            "training.batch_size": sizes.batch_size})
    full = final_fit(full_spec, folder / "full-model")
    print(f"  full fine-tune: accuracy {full['accuracy']:.4f}, trains {full['trainable_fraction']:.1%}, "
          f"{full['wall_s']:.0f} s", flush=True)

    space = search_space(num_layers_in_config(load_config(ctx.model)))
    fixed = {"importance.enabled": True, "importance.granularity": "tensor",
             "training.epochs": sizes.search_epochs, "training.batch_size": sizes.batch_size}
    search_spec = spec("quality-hybrid", search_space=space, fixed=fixed,
                       study={"sampler": "tpe", "pruner": "median", "n_trials": sizes.n_trials, "seed": 0})
    start = time.perf_counter()
    study = run_study(search_spec)
    search_s = time.perf_counter() - start
    best = export_spec(study, storage_url=search_spec.study.storage)
    print(f"  hybrid search: {sizes.n_trials} trials in {search_s:.0f} s; best trial {best.provenance['trial']}: "
          f"CV accuracy {best.provenance['value']:.4f}", flush=True)
    hybrid = final_fit(best.model_copy(update={"fixed": {**best.fixed, "training.epochs": sizes.final_epochs}}),
                       folder / "hybrid-model")
    print(f"  hybrid: accuracy {hybrid['accuracy']:.4f}, trains {hybrid['trainable_fraction']:.1%}, "
          f"final fit {hybrid['wall_s']:.0f} s (+ {search_s:.0f} s of search)", flush=True)

    timing = (f"full fine-tune {full['accuracy']:.4f} in {full['wall_s']:.0f} s; hybrid {hybrid['accuracy']:.4f} "
              f"in {hybrid['wall_s']:.0f} s + {search_s:.0f} s of search")
    targets = [
        check("hybrid - full fine-tune dev accuracy", hybrid["accuracy"] - full["accuracy"], 0.0, at_most=False,
              detail=timing),
        check("hybrid trainable fraction", hybrid["trainable_fraction"], MAX_TRAINABLE_FRACTION,
              detail=f"full fine-tune trains {full['trainable_fraction']:.0%}"),
    ]
    return {"sizes": sizes, "full_fine_tune": full, "hybrid": {**hybrid, "search_s": search_s,
                                                                 "config": best.fixed, "cv": best.provenance},
            "search_space": space, "search_fixed": fixed, "trials": trial_table(study), "targets": targets}


def final_fit(spec: StudySpec, output: Path) -> dict[str, Any]:
    """``train_final`` on all training rows, scored on the dev split: accuracy, trainable fraction, times."""
    start = time.perf_counter()
    trained = train_final(spec, output)
    wall = time.perf_counter() - start
    meta = trained.metadata
    return {"accuracy": meta["metrics"]["accuracy"], "f1_macro": meta["metrics"]["f1_macro"],
            "dev_rows": meta["metrics"]["rows"], "trainable_fraction": meta["training"]["trainable_fraction"],
            "trainable_params": meta["training"]["trainable_params"], "total_params": meta["training"]["total_params"],
            "epochs": meta["training"]["epochs"], "train_time_s": meta["training"]["train_time_s"], "wall_s": wall}


def trial_table(study: Any) -> list[dict[str, Any]]:
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "trainable_fraction": t.user_attrs.get("trainable_fraction"), "seconds": trial_seconds(t)}
            for t in study.get_trials(deepcopy=False)]
