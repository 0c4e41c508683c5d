"""Repeat detection: a trial whose configuration the study already completed reuses that verdict.

Why a module of its own: which verdicts may be reused (COMPLETE ones, with the same pooling) and which
attributes a repeat copies is a rule of the study's bookkeeping, read by ``docs/user_attrs.md`` and tests,
independent of how a configuration is fine-tuned.
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from hft_search.attrs import FOLD_EPOCHS_ATTR, REPEAT_OF_ATTR, TRIAL_SCORE_ATTRS

logger = logging.getLogger(__package__)  # "hft_search.objective": the logger users know the trials' lines by


VERDICT_ATTRS = TRIAL_SCORE_ATTRS
"""The attributes of a COMPLETE trial that a repeat of its configuration copies: what the configuration scored
and how (``docs/user_attrs.md``), everything ``status``, reports, ``export`` and ``verify`` read from a complete
trial. Not the marks of how the earlier trial came about or ended (``baseline``, ``enqueued``, ``surplus``,
``fail_reason``, ``failure_kind``, ``repeat_of``) nor its cost (``fold_epochs``: a repeat trains nothing)."""


def repeated_trial(trial: optuna.Trial, pooling: str) -> optuna.trial.FrozenTrial | None:
    """The first COMPLETE trial of the study with ``trial``'s parameters whose head read ``pooling``, or None.

    Folds and seeds are the study's, so a configuration fine-tuned again would only give the same score at the
    price of k fine-tunes. Only a COMPLETE verdict is reused: a PRUNED one depended on the trials it was
    compared with at that moment (the pruner judges against the trials that had reached the same step), and a
    FAIL on the machine (out of memory, a lost device) or on a bug since fixed, so those configurations are
    fitted again. So is a trial scored with another pooling, or before pooling was recorded: ``model.pooling`` is
    not a searched parameter, and a study resumed after the packaged MiniLM's default moved from ``cls`` to
    ``mean`` would otherwise reuse verdicts its classifier head no longer reproduces.
    """
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (other.number != trial.number and other.params == trial.params
                and other.user_attrs.get("pooling") == pooling):
            return other
    return None


def repeat_verdict(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> float | tuple[float, ...]:
    """End ``trial`` with the values of ``earlier`` (a COMPLETE trial of the same configuration), without
    fine-tuning.

    The sampler learns that this point is known (Optuna's advice for repeated samples); the trial records
    ``repeat_of``, ``fold_epochs`` 0, and :data:`VERDICT_ATTRS` of the earlier trial, so reports and ``export``
    see a complete trial.
    """
    logger.info("trial %d repeats the configuration of trial %d: its verdict is reused, nothing is fine-tuned "
                "(set study.allow_repeats to fine-tune repeats)", trial.number, earlier.number)
    for key in sorted(VERDICT_ATTRS & earlier.user_attrs.keys()):
        trial.set_user_attr(key, earlier.user_attrs[key])
    trial.set_user_attr(REPEAT_OF_ATTR, earlier.number)
    trial.set_user_attr(FOLD_EPOCHS_ATTR, 0)
    return tuple(earlier.values) if len(earlier.values) > 1 else earlier.values[0]
