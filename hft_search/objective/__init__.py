"""The Optuna adapter of the cross-validator: one trial = one sampled hybrid configuration scored on k folds.

Flow of a trial (:meth:`CVObjective.__call__`):

1. :func:`suggest_config` samples the spec's search space. Group switches (``lora.enabled`` ...) are sampled
   first and a group's knobs only when it is on, so the sampler never sees inactive knobs.
2. :class:`~hft_search.cv.CrossValidator` fits the configuration fold by fold (same folds and seeds in every
   trial: common random numbers, so two trials differ by their configuration, not by their luck).
3. The trial reports as the pruner needs (:mod:`hft_search.pruning`): with a multi-fidelity pruner
   (``successive_halving``, the default, and ``hyperband``) the running CV estimate after every epoch, at dense
   fold-epoch steps (a fold that ended early carries its score forward), so a hopeless configuration stops
   after one epoch; with ``wilcoxon`` and ``median`` each fold's score, at step ``fold``. No trial is pruned
   in its final fold, and a baseline trial never.
   The value is the mean fold score; provenance goes into the trial's user attributes
   (see ``docs/user_attrs.md``), the torch thread count included (``verify`` re-runs with it).
4. A configuration the study already completed is not fine-tuned again (:func:`repeated_trial`): the trial
   reuses that verdict and says ``repeat_of``. PRUNED and FAIL configurations are fitted again.

The trials of the baseline sweep (:mod:`hft_search.baseline`, enqueued first) run the plain full fine-tune at
their learning rate instead of a sampled configuration; lifts over the best of them are computed when read.

Failures, and why they end as they do:

* a NaN or infinite loss ends the trial **PRUNED**: it is a property of the configuration (say, a learning
  rate far too high), so the sampler should see the trial as bad and steer away from that region;
* out-of-memory (``torch.OutOfMemoryError``, or :class:`~hft_search.exceptions.DeviceMemoryError` when the
  configuration was refused before training for not fitting the device) or any other exception in a fold ends
  it **FAIL**: a property of the machine or a bug, which should not bias the sampler. Out-of-memory is recorded
  as ``failure_kind: "oom"``, which the worker's fail-fast rule does not count (a configuration too large for
  the device says nothing about the next one); any other exception as ``"exception"``. In all cases
  ``fail_reason`` is recorded and the study goes on.

One piece per private module: :mod:`._sampling` (a trial's configuration), :mod:`._repeats` (a configuration
already scored) and :mod:`._adapter` (:class:`CVObjective`, the adapter itself); the public names are
re-exported here, with :func:`~hft_search.exceptions.error_text` that the adapter uses for ``fail_reason``.
"""

from __future__ import annotations

from hft_search.exceptions import REASON_CHARS, error_text
from hft_search.objective._adapter import CVObjective, trial_attributes
from hft_search.objective._repeats import VERDICT_ATTRS, repeat_verdict, repeated_trial
from hft_search.objective._sampling import suggest_config, suggest_value, trial_config

__all__ = [
    "REASON_CHARS",
    "VERDICT_ATTRS",
    "CVObjective",
    "error_text",
    "repeat_verdict",
    "repeated_trial",
    "suggest_config",
    "suggest_value",
    "trial_attributes",
    "trial_config",
]
