"""Studies: the storage, sampler and pruner a spec asks for, opening or resuming a study (checked against the
spec), and running it with the worker loop of :mod:`hft_search.workers`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hft_search._optuna_compat import experimental
from hft_search.attrs import SPEC_ATTR, SPEC_HASH_ATTR
from hft_search.exceptions import StorageError
from hft_search.inputs import check_storage_target
from hft_search.pruning import ReportSchedule, guarded_pruner
from hft_search.seeding import open_warm_start, seed_study, wait_until_seeded
from hft_search.spec import StudySpec, grid_values
from hft_search.storage import (
    check_url,
    load_named_study,
    make_storage,
    mask_url,
    resolve_storage_url,
)
from hft_search.workers import (
    AbortTrial,
    GracefulStop,
    Objective,
    StopRequested,
    counted_trials,
    optimize,
    resumed_seed,
    worker_seed,
)

if TYPE_CHECKING:
    from hft_search.caching import Cache

logger = logging.getLogger(__name__)


def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded (``seed`` overrides the spec's: see :func:`worker_seed`). TPE is multivariate
    with ``group=True`` (conditional knobs) and a constant liar, so parallel workers do not all sample the same
    region while their trials run."""
    seed = spec.study.seed if seed is None else seed
    name = spec.study.sampler
    if name == "tpe":  # multivariate, group and constant_liar are "experimental": wanted here, warning or not
        return experimental(lambda: optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True,
            n_startup_trials=min(10, max(2, spec.study.n_trials // 3))))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        space = {key: grid_values(dist) for key, dist in spec.search_space.items()}
        # Always the spec's seed: every worker must share one order of the grid, so that each trial number
        # names the same grid point in all of them and no point runs twice.
        return optuna.samplers.GridSampler(space, seed=spec.study.seed)
    return optuna.samplers.NSGAIISampler(seed=seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner, under the rules of :mod:`hft_search.pruning` (never in a trial's final fold, never a
    baseline trial, and not at a step until :data:`~hft_search.pruning.MIN_TRIALS_PER_RUNG` trials reached it).

    Multi-fidelity (``successive_halving``, ``hyperband``) decide after every fold-epoch, on dense steps
    ``fold * max_epochs + epoch`` (:class:`~hft_search.pruning.ReportSchedule`): a hopeless configuration stops
    after its first epoch of fold 0 once enough trials have been there, a promising one earns every fold.
    Successive halving (asynchronous, as in ASHA) keeps the best third of the trials at 1, 3, 9 ... fold-epochs
    before the final fold, all trials competing; Hyperband runs several such schedules (brackets) side by side,
    which hedges against a too early first cut but splits a small budget into brackets whose trials never
    compete.
    Wilcoxon compares a trial's fold scores with the best trial's, fold by fold; median compares each fold
    score with the other trials' at that fold.
    """
    return guarded_pruner(spec.study.pruner, ReportSchedule.for_spec(spec))


def directions(spec: StudySpec) -> list[str]:
    """The study's directions: the CV score is maximized (every metric is better when higher); a Pareto study's
    second objective, the trainable fraction or the student's size, is minimized."""
    if spec.study.objectives == "score":
        return ["maximize"]
    return ["maximize", "minimize"]


def open_study(spec: StudySpec, *, storage: str | None = None, study_name: str | None = None) -> optuna.Study:
    """Create the study, or load it when it exists (the resume path); the spec is stored on first creation."""
    url = resolve_storage_url(storage, spec.study.storage)
    return _open_study_in(spec, _storage_for(spec, url), url, study_name or spec.name)


def _storage_for(spec: StudySpec, url: str) -> BaseStorage:
    return make_storage(url, heartbeat_interval=spec.study.heartbeat_interval,
                        grace_period=spec.study.grace_period, max_retries=spec.study.max_retries)


def _open_study_in(spec: StudySpec, backend: BaseStorage, url: str, name: str,
                   sampler_seed: int | None = None) -> optuna.Study:
    """Create the study and seed it (:func:`hft_search.seeding.seed_study`), or load it when another process
    created it first or this is a resume: only the creator seeds, so the baseline is enqueued exactly once."""
    try:
        study = optuna.create_study(storage=backend, study_name=name, directions=directions(spec),
                                    sampler=make_sampler(spec, sampler_seed), pruner=make_pruner(spec))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=backend, pruner=make_pruner(spec))
        created = False
    if created:
        _store_spec(study, spec)
        try:
            seed_study(study, spec, url)
        except BaseException:  # a warm start that cannot load leaves no half-seeded study behind
            optuna.delete_study(study_name=name, storage=backend)
            raise
    else:
        wait_until_seeded(study)
        if study.user_attrs.get(SPEC_HASH_ATTR) is None:  # a study created by plain Optuna or an older hft-search
            _store_spec(study, spec)
    check_resumable(study, spec, url)
    if not created:
        study.sampler = make_sampler(spec, resumed_seed(spec, study) if sampler_seed is None else sampler_seed)
    logger.info("study %s in %s: %d of %d trials done", name, mask_url(url), counted_trials(study),
                spec.study.n_trials)
    return study


def _store_spec(study: optuna.Study, spec: StudySpec) -> None:
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))  # passwords masked by their type
    study.set_user_attr(SPEC_HASH_ATTR, spec.search_hash())
    study.set_user_attr("metric", spec.cv.metric)
    study.set_user_attr("objectives", spec.study.objectives)


def check_resumable(study: optuna.Study, spec: StudySpec, url: str) -> None:
    """Refuse to resume a study that the spec contradicts: other directions, objectives or search.

    Optuna keeps the directions a study was created with and ignores those of a later ``create_study``, so a
    resumed study with another ``direction`` would silently optimise the old one, and one with other
    ``objectives`` would fail every trial (the objective returns more values than the study takes), for ever.
    """
    stored_directions = [d.name.lower() for d in study.directions]
    differences = []
    if stored_directions != directions(spec):
        differences.append(f"directions {stored_directions} (spec: {directions(spec)})")
    stored_objectives = study.user_attrs.get("objectives")
    if stored_objectives is not None and stored_objectives != spec.study.objectives:
        differences.append(f"objectives {stored_objectives!r} (spec: {spec.study.objectives!r})")
    if study.user_attrs.get(SPEC_HASH_ATTR) != spec.search_hash():
        differences.append("data, model, cv, search space or fixed knobs")
    if differences:
        raise StorageError(
            f"study {study.study_name!r} in {mask_url(url)} was created with other {'; '.join(differences)}; "
            "resuming would mix incomparable trials. Use --study-name NEW_NAME (or a new spec `name`), "
            "or restore the original spec.")


def target_trials(spec: StudySpec, n_trials: int | None = None) -> int:
    """``n_trials`` (else the spec's), capped at the size of the grid for the grid sampler: past it, Optuna's
    ``GridSampler`` could only repeat configurations that were already scored."""
    wanted = n_trials or spec.study.n_trials
    if spec.study.sampler != "grid":
        return wanted
    size = math.prod(len(grid_values(dist)) for dist in spec.search_space.values())
    if size < wanted:
        logger.info("n_trials=%d is more than the %d points of the grid: the study stops at %d",
                    wanted, size, size)
    return min(wanted, size)


def default_cache(spec: StudySpec, storage_url: str) -> Cache:
    """The on-disk cache: ``spec.cache_dir``, else ``.hft_cache`` beside a SQLite/journal file, else in the
    working directory."""
    from hft_search.caching import Cache  # imports torch: not needed to join a study

    if spec.cache_dir:
        return Cache(spec.cache_dir)
    for prefix in ("sqlite:///", "journal:"):
        if storage_url.startswith(prefix):
            path = Path(storage_url.removeprefix(prefix).removeprefix("//"))
            return Cache(path.resolve().parent / ".hft_cache")
    return Cache(Path.cwd() / ".hft_cache")


def run_study(spec: StudySpec, *, n_trials: int | None = None, storage: str | None = None,
              study_name: str | None = None, progress: bool = False,
              objective: Objective | None = None, stop: StopRequested | None = None,
              sampler_seed: int | None = None, abort: AbortTrial | None = None,
              spec_file: str | Path | None = None) -> optuna.Study:
    """Open (or resume) the spec's study, run it to ``n_trials`` counted trials with the CV objective, then run
    its confirmation round (``study.confirm``, :mod:`hft_search.confirm`).

    Other processes may run the same study at the same time (see :func:`run_worker`): together they finish
    exactly ``n_trials``, and the one that finishes last (no searched trial still running) confirms.
    ``objective`` replaces the CV objective (tests, benchmarks of the storage; no confirmation then); ``abort``
    confines interrupts to the objective (:class:`~hft_search.workers.AbortTrial`, for Ray's workers).
    A storage file that would replace the spec (``spec_file``) or one of its inputs is refused first.
    """
    url = resolve_storage_url(storage, spec.study.storage)
    check_storage_target(url, spec, spec_file)
    open_warm_start(spec, url)  # before anything is created: a warm start that cannot load leaves nothing
    # A database server is opened first, so that an unreachable one fails before the model is loaded; a file
    # storage last, so that a run whose data or model cannot load leaves no empty database file behind.
    backend = _storage_for(spec, url) if check_url(url) == "postgresql" else None
    fingerprint, cv = None, None
    if objective is None:  # before the study: a spec whose data or model cannot load leaves no study behind
        from hft_search.objective import CVObjective

        cv = CVObjective(spec, cache=default_cache(spec, url), progress=progress)
        objective, fingerprint = cv, cv.cv.data.fingerprint
    if backend is None:
        backend = _storage_for(spec, url)
    study = _open_study_in(spec, backend, url, study_name or spec.name, sampler_seed)
    if fingerprint is not None and "data_fingerprint" not in study.user_attrs:
        study.set_user_attr("data_fingerprint", fingerprint)
    optimize(study, objective, target_trials(spec, n_trials), timeout=spec.study.timeout, progress=progress,
             max_retries=spec.study.max_retries, max_consecutive_failures=spec.study.max_consecutive_failures,
             stop=stop, abort=abort)
    stopped = (stop is not None and stop()) or (abort is not None and abort())
    if cv is not None and spec.study.confirm and not stopped and _searched_trials_done(study):
        from hft_search.confirm import confirm_study

        confirm_study(study, spec, cache=cv.cv.cache, data=cv.cv.data, base=cv.cv.base)
    return study


def _searched_trials_done(study: optuna.Study) -> bool:
    """Whether a confirmation round can run now: a single-objective study with a completed searched trial and
    no trial still running in another worker (which would change the top configurations)."""
    from hft_search.baseline import is_baseline

    trials = study.get_trials(deepcopy=False)
    if len(study.directions) > 1:
        logger.info("study %s is multi-objective: no confirmation round (a Pareto front has no single winner)",
                    study.study_name)
        return False
    if any(t.state == TrialState.RUNNING for t in trials):
        logger.info("trials of study %s still run in other workers: the last worker to finish confirms (or run "
                    "`hft-search confirm --study %s`)", study.study_name, study.study_name)
        return False
    return any(t.state == TrialState.COMPLETE and not is_baseline(t) for t in trials)


def run_worker(spec: StudySpec, *, storage: str | None = None, study_name: str | None = None,
               progress: bool = False, objective: Objective | None = None,
               spec_file: str | Path | None = None) -> optuna.Study:
    """``hft-search worker``: join (or create) the spec's study and run trials until ``n_trials`` count in it.

    Start any number of workers, on any machines, on the same storage: together they finish exactly
    ``n_trials`` trials. SIGTERM or SIGINT stops a worker cleanly (see :class:`GracefulStop`).
    """
    with GracefulStop() as stop:
        return run_study(spec, storage=storage, study_name=study_name, progress=progress, objective=objective,
                         stop=stop, sampler_seed=worker_seed(spec), spec_file=spec_file)


def load_study(study_name: str, storage: str | None) -> optuna.Study:
    """An existing study, with a clear error naming the studies that do exist; creates nothing."""
    url = resolve_storage_url(storage, None)
    return load_named_study(study_name, make_storage(url, must_exist=True), mask_url(url))


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best COMPLETE trial, with a clear error when there is none yet."""
    if len(study.directions) > 1:
        raise StorageError(f"study {study.study_name!r} is multi-objective; pick a Pareto trial with "
                           f"--trial N from: {', '.join(str(t.number) for t in study.best_trials)}")
    try:
        return study.best_trial
    except ValueError:
        raise StorageError(f"study {study.study_name!r} has no completed trial yet; run it first") from None
