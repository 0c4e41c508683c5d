"""Search efficiency: TPE with Wilcoxon pruning against random search without pruning (issue 5).

Both search the same hybrid space (learning rate, frozen blocks, importance mask on/off and its quantile,
LoRA on/off and its rank) with the same trial budget, on the same folds and seeds (common random numbers),
through the real worker loop and CV objective. Each sampler seed gives one pair of studies; the order of the
pair alternates from seed to seed, so whichever runs second does not always find the machine warmer.

Per seed, from the trials' own timestamps:

* **time to random's best**: the wall time TPE + Wilcoxon needs to reach the best score random search found
  with its whole budget, as a share of random search's wall time (issue 5 target: ≤ 50 %, median over
  seeds). Also as a share of the time random search took to find that score itself;
* **best at equal wall time**: each study's best score when the shorter of the two ended.

The Wilcoxon pruner (p < 0.1) compares a trial's fold scores with the best trial's, fold by fold: with 5
folds it can stop a clearly worse trial after its 3rd or 4th fold.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from benchmarks._common import Context, bench_spec, check
from hft_search.caching import Cache
from hft_search.data import load_data
from hft_search.models import load_base, load_config, num_layers_in_config
from hft_search.objective import CVObjective
from hft_search.spec import StudySpec
from hft_search.study import open_study
from hft_search.workers import optimize

SAMPLERS = {"tpe+wilcoxon": {"sampler": "tpe", "pruner": "wilcoxon"},
            "random": {"sampler": "random", "pruner": "none"}}


@dataclass(frozen=True)
class Sizes:
    rows: int
    folds: int
    max_length: int
    epochs: int
    batch_size: int
    n_trials: int
    seeds: tuple[int, ...]


SIZES = {
    "full": Sizes(rows=400, folds=5, max_length=32, epochs=1, batch_size=16, n_trials=10, seeds=(0, 1)),
    "quick": Sizes(rows=100, folds=5, max_length=32, epochs=1, batch_size=16, n_trials=4, seeds=(0,)),
    "smoke": Sizes(rows=60, folds=5, max_length=16, epochs=1, batch_size=8, n_trials=3, seeds=(0,)),
}


def search_space(num_layers: int) -> dict[str, Any]:
    return {
        "training.learning_rate": {"float": [1e-5, 1e-3], "log": True},
        "freeze.layers": {"int": [0, num_layers - 1]},
        "importance.enabled": {"categorical": [True, False]},
        "importance.threshold": {"float": [0.0, 0.9]},
        "lora.enabled": {"categorical": [True, False]},
        "lora.r": {"int": [4, 16], "log": True},
    }


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes(SIZES)
    folder = ctx.folder("search_efficiency")
    space = search_space(num_layers_in_config(load_config(ctx.model)))
    fixed = {"training.epochs": sizes.epochs, "training.batch_size": sizes.batch_size}

    def spec(method: str, seed: int) -> StudySpec:
        return bench_spec(ctx, f"efficiency-{method}-{seed}", folder, rows=sizes.rows, max_length=sizes.max_length,
                          folds=sizes.folds, fixed=fixed, search_space=space,
                          study={**SAMPLERS[method], "n_trials": sizes.n_trials, "seed": seed})

    data = load_data(spec("random", 0).data)
    base = load_base(ctx.model, data.label_names)
    # One cache for every study: tokens and importance scores are computed once, by whichever study needs them
    # first (the alternating order spreads that small cost).
    cache = Cache(folder / "cache")
    print(f"search efficiency: {sizes.rows} rows, {sizes.folds} folds, {sizes.epochs} epoch(s), batch "
          f"{sizes.batch_size}, max_length {sizes.max_length}; {sizes.n_trials} trials per study, seeds "
          f"{list(sizes.seeds)}", flush=True)
    seeds = []
    for index, seed in enumerate(sizes.seeds):
        methods = list(SAMPLERS) if index % 2 == 0 else list(reversed(SAMPLERS))
        runs = {}
        for method in methods:
            study_spec = spec(method, seed)
            objective = CVObjective(study_spec, cache=cache, data=data, base=base)
            runs[method] = run_study(study_spec, objective)
            print(f"  seed {seed} {method}: best {runs[method]['best']:.4f} after {runs[method]['wall_s']:.0f} s, "
                  f"{runs[method]['pruned']} pruned, {runs[method]['fold_fits']} fold fine-tunes", flush=True)
        seeds.append({"seed": seed, "order": methods, **runs, **compare_runs(runs["tpe+wilcoxon"], runs["random"])})
    shares = [_finite(s["time_to_random_best_share"]) for s in seeds]
    gains = [s["best_at_equal_time"]["tpe+wilcoxon"] - s["best_at_equal_time"]["random"] for s in seeds]
    median_share = statistics.median(shares)
    targets = [
        check("TPE+Wilcoxon wall time to random search's final best / random search's wall time",
              median_share, 0.5, detail=f"median over {len(seeds)} seed(s): "
              + ", ".join("not reached" if v == float("inf") else f"{v:.2f}" for v in shares)),
        check("TPE+Wilcoxon best - random best at equal wall time (accuracy)", statistics.mean(gains), 0.0,
              at_most=False, detail=f"mean over {len(seeds)} seed(s): " + ", ".join(f"{g:+.4f}" for g in gains)),
    ]
    return {"sizes": sizes, "search_space": space, "fixed": fixed, "samplers": SAMPLERS, "seeds": seeds,
            "targets": targets}


def _finite(value: float | None) -> float:
    return float("inf") if value is None else value


def run_study(spec: StudySpec, objective: CVObjective) -> dict[str, Any]:
    """Run one study to its trial budget; its best-so-far curve against wall time since its first trial."""
    study = open_study(spec)
    start = time.perf_counter()
    optimize(study, objective, spec.study.n_trials, max_retries=0)
    wall = time.perf_counter() - start
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_complete)
    origin = min(t.datetime_start for t in trials)
    curve, best = [], float("-inf")
    for trial in trials:
        if trial.value is not None:
            best = max(best, trial.value)
        curve.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                      "folds": len(trial.intermediate_values), "best_so_far": best,
                      "elapsed_s": (trial.datetime_complete - origin).total_seconds()})
    return {"wall_s": wall, "best": best, "curve": curve,
            "pruned": sum(point["state"] == "PRUNED" for point in curve),
            "fold_fits": sum(point["folds"] for point in curve)}


def time_to_reach(curve: list[dict[str, Any]], score: float) -> float | None:
    """Elapsed seconds when the curve's best first reached ``score``; None when it never did."""
    return next((point["elapsed_s"] for point in curve if point["best_so_far"] >= score), None)


def best_at(curve: list[dict[str, Any]], seconds: float) -> float:
    return max((point["best_so_far"] for point in curve if point["elapsed_s"] <= seconds), default=float("-inf"))


def compare_runs(tpe: dict[str, Any], random: dict[str, Any]) -> dict[str, Any]:
    random_total = random["curve"][-1]["elapsed_s"]
    random_own = time_to_reach(random["curve"], random["best"])
    reached = time_to_reach(tpe["curve"], random["best"])
    equal = min(tpe["curve"][-1]["elapsed_s"], random_total)
    return {
        "random_best": random["best"], "tpe_time_to_random_best_s": reached, "random_total_s": random_total,
        "random_time_to_own_best_s": random_own,
        "time_to_random_best_share": None if reached is None else reached / random_total,
        "time_to_random_best_vs_random_own": None if reached is None or not random_own else reached / random_own,
        "equal_time_s": equal,
        "best_at_equal_time": {"tpe+wilcoxon": best_at(tpe["curve"], equal), "random": best_at(random["curve"], equal)},
    }
