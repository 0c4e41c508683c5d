"""What a new study tries first: the baseline, the user's own configurations, and an earlier study's best.

Order of the enqueued trials: the baseline sweep of the plain full fine-tune (:mod:`hft_search.baseline`;
trials 0, 1, 2 unless ``study.baseline`` says otherwise), then the literature portfolio
(:mod:`hft_search.portfolio`), then ``study.enqueue`` in the spec's order, then the ``study.warm_start.top`` best
COMPLETE trials of ``study.warm_start.study``. Enqueued trials are WAITING trials: any worker runs them before
sampling anything new. The portfolio's, the user's and the warm start's count towards ``n_trials`` like every
other trial; the baseline trials do not (they measure the reference, not the search).

Why only the creator seeds: every worker opens the study, but only the one process whose
``optuna.create_study(load_if_exists=False)`` succeeded created it (the others get ``DuplicatedStudyError``
and load it), so the baseline is enqueued exactly once, and never again on resume. Enqueuing takes
milliseconds; a worker that loads a study with no trials before it is seeded waits for the ``seeded`` study
attribute (at most :data:`SEED_WAIT_S`), so that the baseline sweep keeps the first numbers.

Why knobs of a warm start are filtered: the earlier study may search another space. Knobs this spec does not
search are dropped (the sampler or the spec's ``fixed`` decides them), values outside this spec's ranges are
skipped with a warning (the sampler samples them instead), so a warm start never breaks a trial.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from hft_search.attrs import BASELINE_ATTR, ENQUEUED_ATTR, SEEDED_ATTR
from hft_search.baseline import baseline_params, is_baseline
from hft_search.exceptions import StorageError
from hft_search.portfolio import portfolio_params
from hft_search.spec import StudySpec, out_of_range
from hft_search.storage import make_storage, mask_url

logger = logging.getLogger(__name__)

SEED_WAIT_S = 10.0


def filter_params(spec: StudySpec, params: dict[str, Any], source: str) -> dict[str, Any]:
    """The knobs of ``params`` this spec searches, within its ranges; the rest dropped (out-of-range values
    with a warning naming ``source``)."""
    kept: dict[str, Any] = {}
    for name, value in params.items():
        dist = spec.search_space.get(name)
        if dist is None:
            logger.info("%s: %s is not searched by this spec; dropped", source, name)
            continue
        why = out_of_range(dist, value)
        if why is not None:
            logger.warning("%s: %s = %r skipped (%s); the sampler chooses it instead", source, name, value, why)
            continue
        kept[name] = value
    return kept


def open_warm_start(spec: StudySpec, default_storage: str) -> optuna.Study | None:
    """The earlier study named by ``study.warm_start``, opened without creating anything (a missing storage
    or study is an error, not a new empty one); None without a warm start. ``run`` calls it before it creates
    its own study, so a warm start that cannot load leaves no database behind."""
    warm = spec.study.warm_start
    if warm is None:
        return None
    url = warm.storage or default_storage
    try:
        storage = make_storage(url, must_exist=True)
    except StorageError as error:  # its hint is about --storage, which names this study's storage
        cause = str(error).split("; check --storage")[0]
        raise StorageError(f"study.warm_start.storage: {cause}; check study.warm_start.storage") from None
    try:
        earlier = optuna.load_study(study_name=warm.study, storage=storage)
    except KeyError:
        raise StorageError(f"study.warm_start.study: no study {warm.study!r} in {mask_url(url)}; check the name "
                           "and study.warm_start.storage") from None
    if len(earlier.directions) > 1:
        raise StorageError(f"study.warm_start.study: {warm.study!r} is multi-objective; warm-start from a "
                           "single-objective study")
    return earlier


def warm_start_params(spec: StudySpec, default_storage: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``top`` best COMPLETE trials of the warm-start study as (source, filtered params), best first."""
    earlier = open_warm_start(spec, default_storage)
    if earlier is None:
        return []
    warm = spec.study.warm_start
    trials = [t for t in earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not (spec.study.baseline and is_baseline(t))]  # this study runs its own baseline
    maximize = earlier.direction == optuna.study.StudyDirection.MAXIMIZE
    trials.sort(key=lambda t: t.values[0], reverse=maximize)
    picked = []
    for trial in trials[:warm.top]:
        source = f"warm_start:{warm.study}#{trial.number}"
        picked.append((source, filter_params(spec, dict(trial.params), source)))
    if len(picked) < warm.top:
        logger.warning("study.warm_start: %r has only %d completed trial(s); enqueued them all",
                       warm.study, len(picked))
    return picked


def seed_study(study: optuna.Study, spec: StudySpec, storage_url: str) -> int:
    """Enqueue the baseline, the spec's configurations and the warm start into a study just created; returns
    how many trials were enqueued. Call only from the process that created the study (module docstring)."""
    count = 0
    if spec.study.baseline and spec.study.sampler == "grid":
        logger.info("study %s: no baseline trial, since the grid sampler runs only its own grid points",
                    study.study_name)
    elif spec.study.baseline:
        for params in baseline_params(spec):
            study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True})
            count += 1
    seeds = portfolio_params(spec)
    seeds += [("user", dict(entry)) for entry in spec.study.enqueue]
    seeds += warm_start_params(spec, storage_url)
    for source, params in seeds:
        if params:
            study.enqueue_trial(params, user_attrs={ENQUEUED_ATTR: source}, skip_if_exists=True)
            count += 1
    study.set_user_attr(SEEDED_ATTR, True)
    if count:
        logger.info("study %s: enqueued %d trial(s)", study.study_name, count)
    return count


def wait_until_seeded(study: optuna.Study) -> None:
    """Wait (at most :data:`SEED_WAIT_S`) until the creator of a new, empty study has enqueued its seeds."""
    deadline = time.monotonic() + SEED_WAIT_S
    while SEEDED_ATTR not in study.user_attrs and not study.get_trials(deepcopy=False):
        if time.monotonic() > deadline:
            logger.warning("study %s was created by another process that has not seeded it within %.0f s; "
                           "going on without waiting", study.study_name, SEED_WAIT_S)
            return
        time.sleep(0.1)
