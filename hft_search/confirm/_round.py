"""Running the confirmation round: the search's top configurations and the tuned baseline, fitted again on
fresh folds.

Why: the search's best score is optimistic. It is the maximum of many noisy estimates, selected on the very
folds that scored it (the *winner's curse*), and its lift over the baseline inherits that bias. So after the
search, the ``top`` best distinct COMPLETE configurations and the best baseline trial are cross-validated again
on splits and training seeds that no trial ever saw: the next ``repeats`` repeats of the study's repeated
k-fold (:meth:`hft_search.resampling.Resampling.confirmation`; with ``cv.seed: 0`` and no ``cv.repeats``, split
seed 1 and training seeds 3, 4, 5 of a 3-fold), through the same :class:`~hft_search.cv.CrossValidator` as the
search. The winner is the best confirmed mean; its lift over the baseline on these folds is tested with the
corrected resampled t-test (:mod:`hft_search.comparison`) and, since the winner was picked among the ``top``
candidates on these folds, its p-value is multiplied by their number (Bonferroni) before the verdict:
``better``, ``worse`` or ``not separated``. SMAC's intensification re-evaluates incumbents in the same spirit.

The round is stored in the study (study user attribute :data:`CONFIRMATION_ATTR`), so that ``status``,
``best``, the report and ``export`` all show it: ``export`` takes the confirmed winner by default. A second
round over the same fresh folds reuses the scores of configurations already confirmed there. A round is only
defined for single-objective studies: a Pareto front has no single winner.

This module knows Optuna only through the study API; it reads trials and writes one study attribute.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from hft_search.baseline import is_baseline, reference_baseline
from hft_search.comparison import SIGNIFICANCE, compute_lift, folds_text, size_ratio
from hft_search.confirm._record import (
    CONFIRMATION_ATTR,
    Candidate,
    Confirmation,
    candidates,
    stored_confirmation,
)
from hft_search.exceptions import ConfirmError
from hft_search.spec import ConfirmOptions, HybridConfig, StudySpec, spec_from_dict

if TYPE_CHECKING:
    from hft_search.caching import Cache
    from hft_search.data import LabelledData
    from hft_search.models import BaseModel
    from hft_search.resampling import Resampling

logger = logging.getLogger(__name__)


def stored_spec(study: optuna.Study) -> StudySpec:
    """The spec a study was run with (stored by ``hft-search run``), to fit its configurations again."""
    raw = study.user_attrs.get("spec")
    if not isinstance(raw, dict):
        raise ConfirmError(f"study {study.study_name!r} has no stored spec (study user attribute 'spec'); only "
                           "studies run by hft-search (hft-search run / worker) can be confirmed")
    space = {name: _aliased(dist) for name, dist in (raw.get("search_space") or {}).items()}
    return spec_from_dict({**raw, "search_space": space}, source=f"the spec stored in study {study.study_name!r}")


def _aliased(dist: Any) -> Any:
    """A search-space entry as a spec writes it: studies store ``model_dump`` without aliases
    (``{"bounds": [0, 2], "step": 1}``), the spec reads ``{"int": [0, 2], "step": 1}``."""
    if not isinstance(dist, dict) or any(kind in dist for kind in ("float", "int", "categorical")):
        return dist
    if "choices" in dist:
        return {"categorical": dist["choices"]}
    kind = "int" if all(isinstance(b, int) for b in dist.get("bounds", ())) else "float"
    return {kind: dist.get("bounds"), **{k: v for k, v in dist.items() if k != "bounds" and v is not None}}


def confirm_study(study: optuna.Study, spec: StudySpec | None = None, *, top: int | None = None,
                  repeats: int | None = None, cache: Cache | None = None, data: LabelledData | None = None,
                  base: BaseModel | None = None) -> Confirmation:
    """Run the confirmation round of ``study`` and store it there (see the module docstring).

    Args:
        spec: the study's spec (default: the one stored in the study).
        top, repeats: candidates and fresh repeats (default: ``study.confirm`` of the spec, else 3 and 1).
        cache, data, base: shared with the search when it ran in this process.

    Raises:
        ConfirmError: a multi-objective study, a study without a completed searched trial or stored spec.
    """
    from hft_search.cv import CrossValidator
    from hft_search.resampling import Resampling
    from hft_search.workers import counted_trials

    if len(study.directions) > 1:
        raise ConfirmError(f"study {study.study_name!r} is multi-objective: a Pareto front has no single winner "
                           "to confirm; pick a Pareto trial with `hft-search export --trial N` instead")
    spec = spec or stored_spec(study)
    options = spec.study.confirm or ConfirmOptions()
    top, repeats = top or options.top, repeats or options.repeats
    picked = candidates(study, top)
    if not picked:
        raise ConfirmError(f"study {study.study_name!r} has no completed searched trial to confirm; run it first")
    reference = reference_baseline(study)
    resampling = Resampling.confirmation(spec.cv, repeats)
    earlier = stored_confirmation(study)
    reuse = {c.trial: c for c in earlier.candidates if c.failure is None} \
        if earlier is not None and earlier.resampling == resampling.describe() else {}
    cv = CrossValidator(spec, cache=cache, data=data, base=base, resampling=resampling)
    logger.info("confirmation of study %s: %d configuration(s)%s on %s fresh folds (split seeds %s)",
                study.study_name, len(picked), " and the tuned baseline" if reference else "",
                folds_text(resampling.size, repeats), resampling.describe()["split_seeds"])
    fitted = []
    for trial in ([reference] if reference is not None else []) + picked:
        fitted.append(reuse.get(trial.number) or _fit(cv, trial))
    confirmation = judge(fitted, resampling, None if reference is None else reference.number,
                         metric=spec.cv.metric, searched_trials=counted_trials(study))
    study.set_user_attr(CONFIRMATION_ATTR, confirmation.to_attr())
    return confirmation


def _fit(cv: Any, trial: FrozenTrial) -> Candidate:
    """Cross-validate one trial's configuration on the fresh folds; a failure is recorded, not raised."""
    from hft_search.cv import release_memory

    candidate = Candidate(trial.number, is_baseline(trial), float(trial.values[0]), trial.user_attrs.get("score_std"))
    config = HybridConfig.from_flat(trial.user_attrs["config"])
    for fold in range(len(cv.folds)):
        try:
            result = cv.fit_fold(fold, config)
        except Exception as error:  # one configuration that cannot be fitted must not lose the others
            candidate.failure = f"{type(error).__name__} in fold {fold}: {' '.join(str(error).split())[:300]}"
            logger.warning("confirmation: trial %d failed: %s", trial.number, candidate.failure)
            release_memory()
            break
        del result.fit.model
        release_memory()
        if not math.isfinite(result.score):
            candidate.failure = f"fold {fold} scored {result.score}"
            break
        candidate.fold_scores.append(float(result.score))
        candidate.fold_sizes.append(list(result.rows))
        logger.info("confirmation: trial %d fold %d of %d: %.4f", trial.number, fold + 1, len(cv.folds),
                    result.score)
    return candidate


def judge(fitted: list[Candidate], resampling: Resampling, baseline: int | None, *, metric: str,
          searched_trials: int) -> Confirmation:
    """The round's record: the winner (best confirmed mean), the lift of the best searched configuration over
    the ``baseline`` trial on the fresh folds, its p-value × the searched candidates (Bonferroni), and the
    verdict (module docstring)."""
    scored = [c for c in fitted if c.mean is not None]
    winner = max(scored, key=lambda c: c.mean).trial if scored else None
    searched = [c for c in scored if not c.baseline]
    base = next((c for c in scored if c.baseline), None)
    best = max(searched, key=lambda c: c.mean) if searched else None
    lift, p_adjusted, verdict = None, None, "no baseline"
    if base is not None and best is not None:
        ratio = size_ratio(best.fold_sizes, len(best.fold_scores))
        lift = compute_lift(best.fold_scores, base.fold_scores, base.trial,
                            repeats=resampling.repeats, test_train_ratio=ratio)
        if lift is not None and lift.p_value is not None:
            p_adjusted = min(1.0, lift.p_value * sum(not c.baseline for c in fitted))
        verdict = "not separated"
        if lift is not None and p_adjusted is not None and p_adjusted < SIGNIFICANCE and lift.mean != 0:
            verdict = "better" if lift.mean > 0 else "worse"
    elif baseline is not None:
        verdict = "not compared"  # the baseline or every searched candidate failed on the fresh folds
    return Confirmation(resampling.describe(), fitted, winner, baseline, None if best is None else best.trial, lift,
                        p_adjusted, verdict, searched_trials, metric,
                        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def confirm_stored(study_name: str, storage: str | None, *, top: int | None = None,
                   repeats: int | None = None) -> tuple[optuna.Study, Confirmation]:
    """``hft-search confirm``: the confirmation round of a stored study, with the spec stored in it."""
    from hft_search.storage import resolve_storage_url
    from hft_search.study import default_cache, load_study

    url = resolve_storage_url(storage, None)
    study = load_study(study_name, url)
    spec = stored_spec(study)
    return study, confirm_study(study, spec, top=top, repeats=repeats, cache=default_cache(spec, url))
