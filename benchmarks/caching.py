"""Caching: what the content-addressed cache saves, measured on whole CV trials of the real objective.

Three inputs of a trial do not depend on its sampled knobs and come from :class:`hft_search.caching.Cache`:

* **teacher logits** — the teacher is fine-tuned once per fold per study. A distillation trial with the
  logits cached is timed against one that fine-tunes its teachers again (cache disabled, as every trial
  would without it), and against a trial without distillation (issue 5: a KD trial may cost ≤ 1.15× a plain
  one once the teacher is cached);
* **importance scores** — computed once per fold. Trials are timed with the scores cached and recomputed;
  and the time a warm trial spends getting its scores is put against the trial (issue 5: ≤ 5 %);
* **tokenized data** — tokenized once per model, data and ``max_length``: reading it back against
  tokenizing again, when an objective is built.

The first trial of each cached pair fills the cache ("cold": computes and writes); the second is the one
every later trial of the study is like ("warm"). Time spent inside the cache is metered per kind by
:class:`MeteredCache`, the real cache with a stopwatch around each lookup.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchmarks._common import Context, FoldSizes, bench_spec, check, compare, timed_trial
from hft_search.caching import Cache
from hft_search.data import load_data
from hft_search.models import load_base
from hft_search.objective import CVObjective
from hft_search.spec import StudySpec
from hft_search.study import open_study

T = TypeVar("T")


@dataclass(frozen=True)
class Sizes(FoldSizes):
    batch_size: int
    tokenize_repeats: int


SIZES = {
    "full": Sizes(rows=480, folds=3, max_length=48, epochs=1, batch_size=16, tokenize_repeats=5),
    "quick": Sizes(rows=120, folds=3, max_length=32, epochs=1, batch_size=16, tokenize_repeats=3),
    "smoke": Sizes(rows=48, folds=2, max_length=16, epochs=1, batch_size=8, tokenize_repeats=2),
}
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "distill": {"distill.enabled": True, "distill.alpha": 0.5, "distill.beta": 0.5, "distill.temperature": 2.0},
    "importance": {"importance.enabled": True, "importance.threshold": 0.5, "importance.granularity": "tensor"},
}
"""The trials compared. The distillation student keeps all its blocks, so only the teacher term differs from
``plain``; the teacher is the full model fine-tuned with the same training knobs."""


class MeteredCache(Cache):
    """The real cache, with the wall time of every :meth:`get_or_compute` added up per kind."""

    def __init__(self, root: str | Path | None) -> None:
        super().__init__(root)
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def get_or_compute(self, kind: str, parts: Mapping[str, Any], compute: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return super().get_or_compute(kind, parts, compute)
        finally:
            self.seconds[kind] += time.perf_counter() - start


@dataclass
class TrialTime:
    seconds: float
    in_cache: dict[str, float]  # seconds per kind spent in the cache during the trial
    value: float | None


class Bench:
    """Objectives of every configuration on shared data and base model, each with its own study."""

    def __init__(self, ctx: Context, sizes: Sizes, folder: Path) -> None:
        self.ctx, self.sizes, self.folder = ctx, sizes, folder
        self.data = load_data(self.spec("plain").data)
        self.base = load_base(ctx.model, self.data.label_names)
        self.studies = 0

    def spec(self, config: str) -> StudySpec:
        fixed = {"training.epochs": self.sizes.epochs, "training.batch_size": self.sizes.batch_size,
                 **CONFIGS[config]}
        return bench_spec(self.ctx, f"caching-{config}", self.folder, rows=self.sizes.rows,
                          max_length=self.sizes.max_length, folds=self.sizes.folds, fixed=fixed)

    def objective(self, config: str, cache: Cache) -> CVObjective:
        return CVObjective(self.spec(config), cache=cache, data=self.data, base=self.base)

    def trials(self, config: str, cache: MeteredCache, count: int) -> list[TrialTime]:
        """``count`` consecutive trials of ``config`` in a new study, with what each spent in the cache."""
        objective = self.objective(config, cache)
        self.studies += 1
        study = open_study(objective.spec, study_name=f"{objective.spec.name}-{self.studies}")
        times = []
        for _ in range(count):
            before = dict(cache.seconds)
            trial, seconds = timed_trial(study, objective)
            spent = {kind: total - before.get(kind, 0.0) for kind, total in cache.seconds.items()}
            times.append(TrialTime(seconds, spent, trial.value))
            print(f"  {config} trial ({'cache' if cache.enabled else 'no cache'}): {seconds:.2f} s; in the cache: "
                  + ", ".join(f"{kind} {s:.3f} s" for kind, s in spent.items() if s), flush=True)
        return times

    def tokenization(self, cache: MeteredCache) -> float:
        """Best time of building an objective's tokenized data through ``cache``."""
        best = float("inf")
        for _ in range(self.sizes.tokenize_repeats):
            before = cache.seconds["tokenized"]
            self.objective("plain", cache)
            best = min(best, cache.seconds["tokenized"] - before)
        return best


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    folder = ctx.folder("caching")
    print(f"caching: {sizes.rows} rows, {sizes.folds} folds, {sizes.epochs} epoch(s), batch {sizes.batch_size}, "
          f"max_length {sizes.max_length}", flush=True)
    bench = Bench(ctx, sizes, folder)
    cached, uncached = MeteredCache(folder / "cache"), MeteredCache(None)
    bench.objective("plain", cached)  # fills the tokenization entry: every trial below reads it
    plain = bench.trials("plain", cached, 1)[0]
    distill_cold, distill_warm = bench.trials("distill", cached, 2)
    distill_none = bench.trials("distill", uncached, 1)[0]
    importance_cold, importance_warm = bench.trials("importance", cached, 2)
    importance_none = bench.trials("importance", uncached, 1)[0]
    tokens_hit, tokens_none = bench.tokenization(cached), bench.tokenization(uncached)
    scoring = importance_warm.in_cache.get("importance", 0.0)
    targets = [
        compare("KD trial, teacher cached / teacher fine-tuned again", distill_warm.seconds, distill_none.seconds,
                "no cache", 1.0, ours_label="cached"),
        compare("importance trial, scores cached / recomputed", importance_warm.seconds, importance_none.seconds,
                "no cache", 1.0, ours_label="cached"),
        compare("tokenization, cached / tokenized again", tokens_hit, tokens_none, "tokenizer", 1.0,
                ours_label="cached"),
        compare("KD trial with cached teacher / non-KD trial", distill_warm.seconds, plain.seconds, "non-KD trial",
                1.15, ours_label="KD trial"),
        check("importance scoring after its first computation / trial time", scoring / importance_warm.seconds,
              0.05, detail=f"{scoring:.3f} s of a {importance_warm.seconds:.2f} s trial (first computation "
                           f"{importance_cold.in_cache.get('importance', 0.0):.2f} s)"),
    ]
    return {
        "sizes": sizes, "configs": CONFIGS,
        "trials": {"plain": plain, "distill_cold": distill_cold, "distill_warm": distill_warm,
                   "distill_no_cache": distill_none, "importance_cold": importance_cold,
                   "importance_warm": importance_warm, "importance_no_cache": importance_none},
        "tokenization_seconds": {"cache_hit": tokens_hit, "no_cache": tokens_none},
        "cache_stats": cached.stats, "targets": targets,
    }
