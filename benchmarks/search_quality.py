"""Search quality (issue 13): does the recommended search find a configuration better than the one users would
run by hand, and how fast?

On SST-2 with the packaged MiniLM, every method gets the same budget in **fold-epochs** (epochs trained summed
over folds; see :mod:`benchmarks._anytime`), on the same folds and training seeds, for each sampler seed:

(a) ``tuned_full`` — the tuned full fine-tune: a learning-rate-only TPE search of plain full fine-tuning;
(b) ``random`` — random search over the hybrid space (no portfolio: it is the sampler's own measure);
(d) ``recommended`` — the default: TPE + multi-fidelity pruning (:data:`RECOMMENDED_PRUNER`), the tuned baseline
    (a learning-rate sweep of the plain full fine-tune, inside (d)'s budget), the literature portfolio (issue 20)
    and the confirmation round.

The hybrid space holds issue 20's methods next to the earlier ones: layer-wise learning-rate decay, re-initialised
top blocks, LoRA variants (DoRA) and LoRA+. (c), TPE without pruning, and the fixed-rate random search of issue 13
are no longer run: their questions were answered (``benchmarks/results/search_quality.json``'s history and
docs/performance.md), and their hour is better spent on a larger budget for the methods users choose between.

Next to (a) and (d), per seed: **SetFit** (:mod:`benchmarks.setfit_arm`), what users pick instead when labels are
few, trained on the very rows of the search and scored on the same dev split.

Per method and seed: best CV score, the best trial exported (``export_spec``) and fitted by ``train_final`` on
all training rows (same epochs as the search: no protocol change between search and final fit) and scored on
the dev split, its trainable fraction, wall times, and the anytime curve (JSON and ``search_quality_<preset>.html``).

Does the verdict users see hold on data the selection never saw? For (d), per seed, after its search the
confirmation round (:mod:`hft_search.confirm`: the top configurations and the tuned baseline re-fitted on fresh
folds, corrected resampled t-test) picks the winner, which ``export`` takes by default. The winner and the tuned
baseline (and the best searched configuration, when the baseline won) are fitted on all training rows and scored
on the dev split; the dev comparison of the tested configuration with the baseline is McNemar's exact test on the
rows where exactly one of them is right (p < 0.05: better or worse, else not separated). The table per seed puts
the search's best CV, the confirmed CV, the winner's curse (search CV − confirmed CV), both dev accuracies, the
confirmed verdict and the dev verdict side by side. The confirmation's fine-tunes are outside the search budget.
Then the warm start (part 2): (d) on a second task (the project's reviews, ``studies/data/reviews.csv``) cold,
and warm-started from the top 3 configurations of the SST-2 study of (d) at seed 0.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy import stats

from benchmarks import _anytime as anytime
from benchmarks import setfit_arm
from benchmarks._common import ROOT, Context, bench_spec, check
from hft_search.baseline import reference_baseline
from hft_search.caching import Cache
from hft_search.confirm import Confirmation, confirm_study, stored_confirmation
from hft_search.data import load_data
from hft_search.export import export_spec, train_final
from hft_search.models import load_base, load_config, num_layers_in_config
from hft_search.objective import CVObjective
from hft_search.pruning import late_prunes
from hft_search.spec import StudySpec
from hft_search.study import open_study
from hft_search.workers import counted_trials, has_verdict, optimize

RECOMMENDED_PRUNER = "successive_halving"
"""(d)'s pruner, the spec's default: multi-fidelity on fold-epochs. Successive halving rather than Hyperband: at
these budgets (a handful of trials) Hyperband's brackets would split the trials into groups that never compete."""
SECOND_TASK = ROOT / "studies" / "data" / "reviews.csv"


@dataclass(frozen=True)
class Method:
    space: str  # "lr": learning rate only, full fine-tune; "hybrid": the hybrid space
    sampler: str
    pruner: str
    baseline: bool
    max_lr_multiplier: float = 10.0


METHODS = {
    "tuned_full": Method("lr", "tpe", "none", baseline=False),
    "random": Method("hybrid", "random", "none", baseline=False),
    "recommended": Method("hybrid", "tpe", RECOMMENDED_PRUNER, baseline=True),
}


@dataclass(frozen=True)
class Sizes:
    rows: int
    dev_rows: int | None  # None: the whole dev split (872 rows)
    folds: int
    max_length: int
    epochs: int  # per fold in the search, and of the final fit
    batch_size: int
    budget_fold_epochs: int  # per method and seed
    seeds: tuple[int, ...]
    warm_rows: int  # rows of the second task
    warm_budget_fold_epochs: int  # 0: no warm-start measurement
    device: str = "cpu"


CPU = Sizes(rows=800, dev_rows=None, folds=3, max_length=48, epochs=2, batch_size=32, budget_fold_epochs=48,
            seeds=(0, 1, 2), warm_rows=480, warm_budget_fold_epochs=18)
SIZES = {
    "full": CPU,  # the suite's published sizes: the 2-core CPU hour
    "cpu": CPU,
    "gpu": Sizes(rows=2000, dev_rows=None, folds=3, max_length=64, epochs=3, batch_size=32, budget_fold_epochs=90,
                 seeds=(0, 1, 2), warm_rows=640, warm_budget_fold_epochs=45, device="auto"),
    "quick": Sizes(rows=300, dev_rows=200, folds=3, max_length=32, epochs=1, batch_size=32, budget_fold_epochs=9,
                   seeds=(0, 1, 2), warm_rows=200, warm_budget_fold_epochs=6),
    "smoke": Sizes(rows=60, dev_rows=None, folds=2, max_length=16, epochs=1, batch_size=16, budget_fold_epochs=4,
                   seeds=(0,), warm_rows=60, warm_budget_fold_epochs=2),
}
MAX_TRAINABLE_FRACTION = 0.20
BASELINE_LEARNS = 0.78
DEV_SIGNIFICANCE = 0.05
"""p below which McNemar's test on the dev split calls two fitted models different."""


def search_space(method: Method, num_layers: int) -> dict[str, Any]:
    """(a): the learning rate alone. Hybrid: the embeddings always frozen plus at least 2 blocks, LoRA (plain or
    DoRA, LoRA+ ratio) on the frozen blocks, an importance cut, layer-wise rate decay and re-initialised top
    blocks on what trains; the rate range is a full fine-tune's, scaled per configuration by
    ``training.max_lr_multiplier``. Distillation is left out: its per-fold teacher costs a full fine-tune
    (:mod:`benchmarks.distill_ablation` measures it)."""
    lr = {"training.learning_rate": {"float": [1e-5, 1e-3], "log": True}}
    if method.space == "lr":
        return lr
    return {**lr, "freeze.layers": {"int": [2, num_layers]},
            "training.layer_lr_decay": {"float": [0.7, 1.0]}, "training.reinit_layers": {"int": [0, 1]},
            "lora.enabled": {"categorical": [True, False]}, "lora.r": {"int": [4, 16], "log": True},
            "lora.variant": {"categorical": ["lora", "dora"]}, "lora.lr_ratio": {"float": [1.0, 16.0], "log": True},
            "importance.enabled": {"categorical": [True, False]}, "importance.threshold": {"float": [0.5, 0.9]}}


class Bench:
    """One run of the benchmark: sizes, scratch folder, shared data, model and cache."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sizes: Sizes = ctx.sizes(SIZES)
        self.folder = ctx.folder("search_quality")
        self.num_layers = num_layers_in_config(load_config(ctx.model))
        self.cache = Cache(self.folder / "cache")  # tokens and importance scores shared by every study
        self.shared: dict[str, Any] = {}

    def spec(self, name: str, method: Method, seed: int, *, train: Path | None = None, rows: int | None = None,
             warm_start: dict[str, Any] | None = None) -> StudySpec:
        sizes = self.sizes
        per_trial = sizes.folds * sizes.epochs
        study = {"sampler": method.sampler, "pruner": method.pruner, "baseline": method.baseline, "seed": seed,
                 "confirm": method.baseline,  # the round runs explicitly after (d)'s search (confirm_run)
                 "portfolio": "literature" if method.baseline else "none",
                 "n_trials": max(2, sizes.budget_fold_epochs // per_trial)}  # sizes TPE's random start-up
        if warm_start:
            study["warm_start"] = warm_start
        ctx = self.ctx if train is None else replace(self.ctx, train=train)
        return bench_spec(ctx, name, self.folder, rows=rows or sizes.rows, max_length=sizes.max_length,
                          folds=sizes.folds, search_space=search_space(method, self.num_layers),
                          fixed={"training.epochs": sizes.epochs, "training.batch_size": sizes.batch_size,
                                 "training.max_lr_multiplier": method.max_lr_multiplier},
                          study=study, device=sizes.device, test=train is None, test_rows=sizes.dev_rows)

    def objective(self, spec: StudySpec) -> CVObjective:
        key = spec.data.train or ""
        if key not in self.shared:
            data = load_data(spec.data)
            self.shared[key] = (data, load_base(spec.model.name, data.label_names))
        data, base = self.shared[key]
        return CVObjective(spec, cache=self.cache, data=data, base=base)

    def search(self, spec: StudySpec, budget: int) -> dict[str, Any]:
        """Run trials one at a time until ``budget`` fold-epochs are spent; the study and its measurements."""
        objective = self.objective(spec)
        study = open_study(spec)
        begun = [t.datetime_start.timestamp() for t in study.get_trials(deepcopy=False) if t.datetime_start]
        origin = min(begun, default=time.time())  # a resumed study's clock starts at its first trial
        spent = self.spent(study)
        while spent < budget:  # the baseline sweep's trials are outside n_trials but inside the budget
            optimize(study, objective, counted_trials(study) + 1, max_retries=0)
            spent = self.spent(study)
        labels = objective.cv.data.train.labels
        points = anytime.curve(study, origin, self.sizes.epochs)
        return {"study": study, "wall_s": points[-1]["elapsed_s"], "fold_epochs": spent,  # to the last verdict
                "best_cv": points[-1]["best_so_far"], "trials": len(points),
                "pruned": sum(p["state"] == "PRUNED" for p in points),
                "pruned_late": late_prunes(study, self.sizes.folds),
                "majority_trials": anytime.majority_trials(study, float(np.bincount(labels).max() / len(labels))),
                "curve": points}

    def spent(self, study: optuna.Study) -> int:
        """Fold-epochs the trials with a verdict have cost so far (the budget's unit)."""
        return sum(anytime.fold_epochs(t, self.sizes.epochs) for t in study.get_trials(deepcopy=False)
                   if has_verdict(t))

    def final_fit(self, run: dict[str, Any], spec: StudySpec, trial: int | None = None) -> dict[str, Any]:
        """Export the best (for (d): the confirmed winner's) or the given trial and fit it by ``train_final``
        (the ``export`` + ``train`` path); its dev accuracy and which dev rows it got right."""
        best = export_spec(run["study"], trial, storage_url=spec.study.storage)
        output = self.folder / f"{spec.name}-model-{best.provenance['trial']}"
        start = time.perf_counter()
        trained = train_final(best, output)
        meta = trained.metadata
        shutil.rmtree(output, ignore_errors=True)
        data, _ = self.shared[spec.data.train or ""]
        right = (np.argmax(trained.test_probs, axis=1) == data.test.labels).tolist()
        return {"dev_accuracy": meta["metrics"]["accuracy"], "dev_rows": meta["metrics"]["rows"],
                "trainable_fraction": meta["training"]["trainable_fraction"],
                "final_fit_s": time.perf_counter() - start, "dev_right": right,
                "best_trial": best.provenance["trial"], "config": best.fixed, "lift": best.provenance.get("lift"),
                "lift_warning": best.provenance.get("lift_warning")}

    def confirm_run(self, run: dict[str, Any], spec: StudySpec) -> Confirmation:
        """(d)'s confirmation round, which makes the confirmed winner ``export``'s default; in a resumed run (a
        kept work folder), the round the study already stored when the search has not grown since."""
        stored = stored_confirmation(run["study"])
        if stored is not None and stored.searched_trials == counted_trials(run["study"]):
            run["confirm_s"] = None  # fitted by the run this one resumes
            return stored
        data, base = self.shared[spec.data.train or ""]
        start = time.perf_counter()
        round_ = confirm_study(run["study"], spec, cache=self.cache, data=data, base=base)
        run["confirm_s"] = time.perf_counter() - start
        return round_

    def verdicts(self, run: dict[str, Any], spec: StudySpec, round_: Confirmation) -> dict[str, Any]:
        """The confirmed verdict next to the dev-set comparison: the tuned baseline (and the tested configuration,
        when the baseline won) fitted like the winner, whose fit is ``run``'s."""
        winner, baseline = round_.winner_candidate, reference_baseline(run["study"])
        record = {"search_best_cv": run["best_cv"], "confirmed_cv": winner.mean, "winners_curse": winner.winners_curse,
                  "winner": round_.winner, "winner_is_baseline": winner.baseline, "confirmed_verdict": round_.verdict,
                  "confirmed_lift": None if round_.lift is None else round_.lift.mean,
                  "confirmed_p": None if round_.lift is None else round_.lift.p_value,
                  "confirmed_p_adjusted": round_.p_adjusted, "confirm_s": run["confirm_s"],
                  "dev_winner": run["dev_accuracy"]}
        if baseline is None or round_.compared is None:  # no completed baseline, or every candidate failed
            return {**record, "dev_baseline": None, "dev_tested": None, "dev_gap": None, "dev_p": None,
                    "dev_verdict": "not compared", "agrees": round_.verdict == "not compared"}
        fits = {round_.winner: {k: run[k] for k in ("dev_accuracy", "dev_right")}}
        for trial in (baseline.number, round_.compared):
            if trial not in fits:
                fits[trial] = self.final_fit(run, spec, trial)
        dev = mcnemar(fits[round_.compared]["dev_right"], fits[baseline.number]["dev_right"])
        return {**record, "tested": round_.compared, "baseline": baseline.number,
                "dev_baseline": fits[baseline.number]["dev_accuracy"],
                "dev_tested": fits[round_.compared]["dev_accuracy"], "dev_gap": dev["gap"], "dev_p": dev["p"],
                "dev_verdict": dev["verdict"], "agrees": dev["verdict"] == round_.verdict}


def mcnemar(ours: list[bool], theirs: list[bool]) -> dict[str, Any]:
    """McNemar's exact test of two models on the same dev rows: the rows only one of them gets right."""
    only_ours = sum(a and not b for a, b in zip(ours, theirs, strict=True))
    only_theirs = sum(b and not a for a, b in zip(ours, theirs, strict=True))
    gap = (only_ours - only_theirs) / max(len(ours), 1)
    p = 1.0 if only_ours + only_theirs == 0 else float(stats.binomtest(only_ours, only_ours + only_theirs).pvalue)
    verdict = "not separated" if p >= DEV_SIGNIFICANCE else ("better" if gap > 0 else "worse")
    return {"gap": gap, "p": p, "verdict": verdict}


def run(ctx: Context) -> dict[str, Any]:
    bench = Bench(ctx)
    sizes = bench.sizes
    print(f"search quality: {sizes.rows} SST-2 rows, {sizes.folds} folds, max_length {sizes.max_length}, "
          f"{sizes.epochs} epoch(s) per fold, budget {sizes.budget_fold_epochs} fold-epochs per method, seeds "
          f"{list(sizes.seeds)}; dev {sizes.dev_rows or 'all'} rows", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in METHODS}
    setfit: list[dict[str, Any]] = []
    for index, seed in enumerate(sizes.seeds):
        order = list(METHODS) if index % 2 == 0 else list(reversed(METHODS))  # no method always runs warm
        for name in order:
            spec = bench.spec(f"sq-{name}-{seed}", METHODS[name], seed)
            run_ = bench.search(spec, sizes.budget_fold_epochs)
            round_ = bench.confirm_run(run_, spec) if METHODS[name].baseline else None
            run_.update(bench.final_fit(run_, spec), seed=seed)  # (d): the confirmed winner, export's default
            if round_ is not None:
                run_["confirmation"] = bench.verdicts(run_, spec, round_)
            del run_["study"], run_["dev_right"]
            runs[name].append(run_)
            print(f"  seed {seed} {name}: best CV {run_['best_cv']:.4f} in {run_['wall_s']:.0f} s "
                  f"({run_['trials']} trials, {run_['pruned']} pruned, {run_['majority_trials']} at the majority "
                  f"class); dev {run_['dev_accuracy']:.4f} training {run_['trainable_fraction']:.1%}", flush=True)
        setfit.append(setfit_run(bench, spec, seed))
    print(verdict_table(runs["recommended"]), flush=True)
    summary = {name: summarize(seeds) for name, seeds in runs.items()}
    warm = warm_start(bench) if sizes.warm_budget_fold_epochs else {"skipped": "no warm-start budget at these sizes"}
    figure = anytime.figure(runs, f"Search quality on SST-2 ({ctx.preset} sizes): best CV so far",
                            ctx.results_dir / f"search_quality_{ctx.preset}.html")
    return {"sizes": sizes, "budget_unit": "fold-epochs", "methods": METHODS, "recommended_pruner": RECOMMENDED_PRUNER,
            "search_spaces": {m.space: search_space(m, bench.num_layers) for m in METHODS.values()},
            "runs": runs, "median": summary, "warm_start": warm, "figure": figure.name,
            "separation": separation(runs), "verdicts": verdict_rows(runs["recommended"]),
            "verdict_table": verdict_table(runs["recommended"]), "setfit": setfit,
            "dev_side_by_side": dev_side_by_side(runs, setfit),
            "targets": [*targets(runs), late_pruning(runs), setfit_target(runs, setfit)]}


def setfit_run(bench: Bench, spec: StudySpec, seed: int) -> dict[str, Any]:
    """SetFit (:func:`benchmarks.setfit_arm.setfit_arm`) on the rows every method searched (``spec``'s), scored on
    their dev split, at this seed."""
    data, _ = bench.shared[spec.data.train or ""]
    steps = setfit_arm.SIZES[bench.ctx.preset].max_steps
    result = setfit_arm.setfit_arm(data.train, data.test, seed, model=bench.ctx.model, max_steps=steps,
                                   max_length=bench.sizes.max_length)
    print(f"  seed {seed} setfit: dev {result['dev_accuracy']:.4f} in {result['seconds']:.0f} s", flush=True)
    return {**result, "seed": seed}


def dev_side_by_side(runs: dict[str, list[dict[str, Any]]], setfit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per seed, the dev accuracy of (a)'s best, (d)'s confirmed winner and SetFit: the three choices a user
    with these few labels has, scored on the same dev rows."""
    return [{"seed": s["seed"], "tuned_full": a["dev_accuracy"], "recommended": d["dev_accuracy"],
             "setfit": s["dev_accuracy"]}
            for a, d, s in zip(runs["tuned_full"], runs["recommended"], setfit, strict=True)]


def setfit_target(runs: dict[str, list[dict[str, Any]]], setfit: list[dict[str, Any]]) -> dict[str, Any]:
    d = [x["dev_accuracy"] for x in runs["recommended"]]
    f = [x["dev_accuracy"] for x in setfit]
    return check("(d) recommended - SetFit, dev accuracy (median over seeds)", float(np.median(d) - np.median(f)),
                 0.0, at_most=False, detail=", ".join(f"{x:.4f} vs {y:.4f}" for x, y in zip(d, f, strict=True)))


VERDICT_COLUMNS = ("seed", "search best CV", "confirmed CV", "winner's curse", "winner", "dev winner",
                   "dev tuned baseline", "dev gap (tested - baseline)", "confirmed verdict", "dev verdict", "agree")


def verdict_rows(seeds: list[dict[str, Any]]) -> list[list[str]]:
    """(d)'s confirmation per seed: search vs confirmed CV, the dev accuracies and both verdicts."""
    rows = []
    for run_ in seeds:
        c = run_["confirmation"]
        rows.append([str(run_["seed"]), f"{c['search_best_cv']:.4f}", f"{c['confirmed_cv']:.4f}",
                     f"{c['winners_curse']:+.4f}",
                     f"#{c['winner']}" + (" (baseline)" if c["winner_is_baseline"] else ""),
                     f"{c['dev_winner']:.4f}", "-" if c["dev_baseline"] is None else f"{c['dev_baseline']:.4f}",
                     "-" if c["dev_gap"] is None else f"{c['dev_gap']:+.4f} (p {c['dev_p']:.2g})",
                     c["confirmed_verdict"], c["dev_verdict"], "yes" if c["agrees"] else "no"])
    return rows


def verdict_table(seeds: list[dict[str, Any]]) -> str:
    """:func:`verdict_rows` as a Markdown table (printed, stored in the JSON, pasted into docs/performance.md)."""
    lines = ["| " + " | ".join(VERDICT_COLUMNS) + " |", "|" + "---|" * len(VERDICT_COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in verdict_rows(seeds)])


def summarize(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("best_cv", "dev_accuracy", "trainable_fraction", "wall_s", "trials", "majority_trials")
    return {key: float(np.median([s[key] for s in seeds])) for key in keys}


def separation(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Whether (d) and (a) differ on dev accuracy by more than the spread between seeds."""
    d, a = ([s["dev_accuracy"] for s in runs[name]] for name in ("recommended", "tuned_full"))
    gap = float(np.median(d) - np.median(a))
    spread = float(max(np.ptp(d), np.ptp(a)))
    return {"dev_gap_recommended_minus_tuned_full": gap, "largest_seed_spread": spread,
            "separated": abs(gap) > spread, "note": "the methods are separated beyond the spread between seeds"
            if abs(gap) > spread else "NOT separated: the gap is within the spread between seeds at these sizes"}


def targets(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    d, a, b = runs["recommended"], runs["tuned_full"], runs["random"]
    shares = [anytime.share_to_reach(ours["curve"], theirs["curve"]) for ours, theirs in zip(d, b, strict=True)]
    confirmed = [x["confirmation"] for x in d]
    wrong_better = [c for c in confirmed if c["confirmed_verdict"] == "better" and c["dev_tested"] is not None
                    and c["dev_tested"] < c["dev_baseline"]]
    median_share = anytime.median(shares)
    dev_gap = float(np.median([x["dev_accuracy"] - y["dev_accuracy"] for x, y in zip(d, a, strict=True)]))
    return [
        check("(d) recommended - (a) tuned full fine-tune, dev accuracy (median over seeds)", dev_gap, 0.0,
              at_most=False, detail=", ".join(f"{x['dev_accuracy']:.4f} vs {y['dev_accuracy']:.4f}"
                                              for x, y in zip(d, a, strict=True))),
        check("(d) recommended trainable fraction of the export (median)",
              float(np.median([x["trainable_fraction"] for x in d])), MAX_TRAINABLE_FRACTION),
        check("(d) wall time to (b) random's final best CV / (b)'s wall time (median)", median_share, 0.5,
              detail=", ".join("not reached" if s is None else f"{s:.2f}" for s in shares)),
        check("(a) tuned full fine-tune dev accuracy (the baseline learns)",
              float(np.median([y["dev_accuracy"] for y in a])), BASELINE_LEARNS, at_most=False),
        check("(d) confirmed 'better' verdicts whose configuration scores lower on dev than the tuned baseline",
              float(len(wrong_better)), 0.0,
              detail=", ".join(f"seed {x['seed']}: {x['confirmation']['confirmed_verdict']} / dev "
                               f"{x['confirmation']['dev_verdict']}" for x in d)),
    ]


def late_pruning(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Trials pruned after they had trained 80 % of their cost or more (``hft_search.pruning.late_prunes``), over
    every method and seed: cost thrown away without a verdict. The pruner never prunes in a trial's final fold."""
    late = {f"{name} seed {run['seed']}": run["pruned_late"] for name, seeds in runs.items() for run in seeds
            if run["pruned_late"]}
    return check("trials pruned after >= 80 % of their cost (all methods and seeds)",
                 float(sum(len(trials) for trials in late.values())), 0.0,
                 detail=", ".join(f"{where}: trials {trials}" for where, trials in late.items()) or "none")


def warm_start(bench: Bench) -> dict[str, Any]:
    """(d) on the second task, cold and warm-started from (d)'s SST-2 study at the first seed, same budget."""
    sizes, seed = bench.sizes, bench.sizes.seeds[0]
    method = METHODS["recommended"]
    source = {"study": f"sq-recommended-{seed}", "storage": f"sqlite:///{bench.folder / 'studies.db'}", "top": 3}
    result = {}
    for label, warm in (("cold", None), ("warm", source)):
        spec = bench.spec(f"sq-second-task-{label}", method, seed, train=SECOND_TASK, rows=sizes.warm_rows,
                          warm_start=warm)
        run_ = bench.search(spec, sizes.warm_budget_fold_epochs)
        del run_["study"]
        result[label] = run_
        print(f"  second task, {label}: best CV {run_['best_cv']:.4f} in {run_['wall_s']:.0f} s "
              f"({run_['trials']} trials)", flush=True)
    result["warm_minus_cold_best_cv"] = result["warm"]["best_cv"] - result["cold"]["best_cv"]
    result["warm_time_to_cold_best_share"] = anytime.share_to_reach(result["warm"]["curve"], result["cold"]["curve"])
    result["task"] = {"train": SECOND_TASK.name, "rows": sizes.warm_rows, "source_study": source["study"]}
    return result
