"""Distillation ablation (issue 20): what makes a 3-block student learn from its 6-block teacher at small data?

On SST-2 with the packaged MiniLM, one small search per row, each adding one knob to the row above:

0. ``cls``         what the service did before issue 20: logits-only KD, the student = the bottom 3 blocks, and
                   a head on the ``[CLS]`` state (``model.pooling: cls``), teacher included;
1. ``logits``      the same with the pooling the checkpoint was trained for (mean, ``model.pooling`` left out);
2. ``+hidden``     PKD's hidden-state loss (Sun et al. 2019), ``distill.hidden_weight`` 100, the middle of
                   their grid;
3. ``+alternate``  the student starts from teacher blocks 0, 2, 5 (DistilBERT, Sanh et al. 2019);
4. ``+unlabeled``  a transfer set the per-fold teacher labels: SST-2 training rows outside the labelled sample,
                   their labels dropped (``data.unlabeled``).

Every row searches the student's learning rate, α and T with the same TPE seed, on the same folds and seeds, and
trains the student longer than its teacher (``training.epochs`` > ``distill.teacher_epochs``, early stopping on
the fold's validation score picks the epoch). The teacher (the full 6-block model, fine-tuned per fold) is the
same in every row; its CV stands next to each row. Per row: the best student CV, the teacher CV, the gap, the
trials that never left the majority class, wall time. Targets: the best student of the last row within 1 point
of its teacher, no student trial of that row at the majority class, and a teacher at least 5 points above the
majority class (a teacher that learnt nothing makes the first target empty).

Why the student's rate is not scaled (``training.max_lr_multiplier``): the 3-block student trains every
parameter it has, so its trainable fraction is 1 and the multiplier is 1 anyway.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _anytime as anytime
from benchmarks._common import Context, bench_spec, check
from hft_search.caching import Cache
from hft_search.data import load_data, read_table, stratified_subsample
from hft_search.models import load_base
from hft_search.objective import CVObjective
from hft_search.spec import StudySpec
from hft_search.study import open_study
from hft_search.workers import optimize


@dataclass(frozen=True)
class Sizes:
    rows: int  # labelled SST-2 rows
    unlabeled_rows: int  # transfer set of the last row
    folds: int
    max_length: int
    epochs: int  # the student's (early stopping on the fold's validation score)
    teacher_epochs: int
    batch_size: int
    trials: int  # per row
    student_layers: int = 3


SIZES = {
    "full": Sizes(rows=800, unlabeled_rows=1600, folds=3, max_length=48, epochs=5, teacher_epochs=3, batch_size=32,
                  trials=4),
    "quick": Sizes(rows=300, unlabeled_rows=600, folds=3, max_length=32, epochs=4, teacher_epochs=3, batch_size=16,
                   trials=2),  # the teacher must learn (200 rows x 2 epochs of 32 left it at the majority class)
    "smoke": Sizes(rows=60, unlabeled_rows=30, folds=2, max_length=16, epochs=1, teacher_epochs=1, batch_size=16,
                   trials=1, student_layers=2),
}
ROWS: dict[str, dict[str, Any]] = {
    "cls": {"distill.hidden_weight": 0.0, "distill.student_init": "bottom"},
    "logits": {"distill.hidden_weight": 0.0, "distill.student_init": "bottom"},
    "+hidden": {"distill.hidden_weight": 100.0, "distill.student_init": "bottom"},
    "+alternate": {"distill.hidden_weight": 100.0, "distill.student_init": "alternate"},
    "+unlabeled": {"distill.hidden_weight": 100.0, "distill.student_init": "alternate"},
}
"""Each row's fixed distillation knobs; ``cls`` also reads the first token (before ``model.pooling``: the
packaged MiniLM is mean-pooled), ``+unlabeled`` also sets ``data.unlabeled``."""
SEARCH_SPACE = {"training.learning_rate": {"float": [5e-5, 5e-4], "log": True},
                "distill.alpha": {"float": [0.2, 1.0]}, "distill.temperature": {"float": [1.0, 8.0]}}
TEACHER_GAP = 0.01
TEACHER_LEARNS = 0.05


def unlabeled_file(ctx: Context, sizes: Sizes, folder: Path) -> Path:
    """SST-2 training rows outside the labelled sample (the sample ``max_train_samples`` draws), texts only."""
    table = read_table(ctx.train, "train", ["text"])
    labels = np.unique(np.asarray(table["label"]), return_inverse=True)[1]
    sample = set(stratified_subsample(labels, sizes.rows, 0).tolist())
    rest = np.array([i for i in range(len(labels)) if i not in sample])
    chosen = np.sort(np.random.default_rng(0).choice(rest, min(sizes.unlabeled_rows, len(rest)), replace=False))
    path = folder / "unlabeled.jsonl"  # JSON lines: SST-2's quotes and backslashes survive as written
    path.write_text("".join(json.dumps({"text": str(table[int(i)]["text"])}) + "\n" for i in chosen),
                    encoding="utf-8")
    return path


def row_spec(ctx: Context, sizes: Sizes, folder: Path, name: str, unlabeled: Path | None) -> StudySpec:
    fixed = {"training.epochs": sizes.epochs, "training.batch_size": sizes.batch_size,
             "training.warmup_ratio": 0.1, "distill.enabled": True, "distill.student_layers": sizes.student_layers,
             "distill.teacher_epochs": sizes.teacher_epochs, "distill.teacher_batch_size": sizes.batch_size,
             "distill.teacher_learning_rate": 1e-4, **ROWS[name]}
    spec = bench_spec(ctx, f"distill-{name}", folder, rows=sizes.rows, max_length=sizes.max_length,
                      folds=sizes.folds, fixed=fixed, search_space=SEARCH_SPACE,
                      study={"n_trials": sizes.trials, "sampler": "tpe", "seed": 0, "baseline": False,
                             "portfolio": "none"})
    if name == "cls":
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"pooling": "cls"})})
    if unlabeled is None:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update={"unlabeled": str(unlabeled)})})


def run_row(spec: StudySpec, cache: Cache) -> dict[str, Any]:
    data = load_data(spec.data)
    base = load_base(spec.model.name, data.label_names, pooling=spec.model.pooling)
    objective = CVObjective(spec, cache=cache, data=data, base=base)
    study = open_study(spec)
    start = time.perf_counter()
    optimize(study, objective, spec.study.n_trials, max_retries=0)
    trials = [t for t in study.get_trials(deepcopy=False) if t.values]
    best = max(trials, key=lambda t: t.values[0])
    majority = float(np.bincount(data.train.labels).max() / len(data.train))
    teacher = float(np.mean(best.user_attrs["teacher_scores"]))
    return {"best_cv": best.values[0], "teacher_cv": teacher, "gap": teacher - best.values[0],
            "trials": len(trials), "majority_trials": anytime.majority_trials(study, majority),
            "majority_share": majority, "best_config": {k: v for k, v in best.params.items()},
            "unlabeled_rows": 0 if data.unlabeled is None else len(data.unlabeled),
            "wall_s": time.perf_counter() - start}


def run(ctx: Context) -> dict[str, Any]:
    sizes: Sizes = ctx.sizes(SIZES)
    folder = ctx.folder("distill_ablation")
    cache = Cache(folder / "cache")  # one teacher per fold, shared by the rows
    print(f"distillation ablation: {sizes.rows} rows of {ctx.train.name}, {sizes.folds} folds, "
          f"{sizes.student_layers}-block student, {sizes.trials} trial(s) per row, student {sizes.epochs} epochs "
          f"vs teacher {sizes.teacher_epochs}; transfer set {sizes.unlabeled_rows} rows", flush=True)
    unlabeled = unlabeled_file(ctx, sizes, folder)
    rows: dict[str, dict[str, Any]] = {}
    for name in ROWS:
        spec = row_spec(ctx, sizes, folder, name, unlabeled if name == "+unlabeled" else None)
        rows[name] = run_row(spec, cache)
        row = rows[name]
        print(f"  {name:<11} best student CV {row['best_cv']:.4f}  teacher CV {row['teacher_cv']:.4f}  gap "
              f"{row['gap']:+.4f}  {row['majority_trials']}/{row['trials']} at the majority class  "
              f"{row['wall_s']:.0f} s", flush=True)
    last = rows["+unlabeled"]
    return {"sizes": sizes, "rows": rows, "search_space": SEARCH_SPACE, "row_knobs": ROWS,
            "targets": [
                check("teacher CV - best student CV (3 blocks of 6 at full and quick sizes), all knobs",
                      last["gap"], TEACHER_GAP,
                      detail=", ".join(f"{n} {r['gap']:+.4f}" for n, r in rows.items())),
                check("student trials at the majority class, all knobs", float(last["majority_trials"]), 0.0,
                      detail=", ".join(f"{n} {r['majority_trials']}/{r['trials']}" for n, r in rows.items())),
                check("teacher CV - majority-class share (the teacher learns, else the gap says nothing)",
                      last["teacher_cv"] - last["majority_share"], TEACHER_LEARNS, at_most=False,
                      detail=f"teacher {last['teacher_cv']:.4f}, majority {last['majority_share']:.4f}"),
            ]}
