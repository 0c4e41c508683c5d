"""The loop that lets any number of workers, on any number of machines, finish **exactly** ``n_trials`` trials of
one study together, and survive interrupted workers, dead workers and storage outages on the way.

The package keeps one concept per private module, and every public name is importable from here:

- ``_counting``: which trials count towards ``n_trials`` (a searched trial with a verdict), and what a study
  that stopped short or has no result tells its user;
- ``_admission``: the place check before each trial's objective, which makes the count exact without a lock
  (a trial that starts when ``n_trials`` places are held is *surplus*);
- ``_loop``: the worker loop (:func:`optimize`): run, wait for a place held by a running trial, or leave;
- ``_fail_fast``: a worker stops after too many of its trials in a row failed from an exception;
- ``_signals``: stopping a worker by a signal, after its trial (:class:`GracefulStop`) or inside it
  (:class:`AbortTrial`), both on one base;
- ``_handback``: a trial its worker could not finish is marked FAIL and re-queued (:func:`requeue_running` for
  ``hft-search requeue``); ``_outage``: waiting for a storage that went away;
- ``_seeds``: the sampler seed of each worker and of a resumed study, so that processes draw different trials.

Each module's docstring says why it works the way it does.
"""

from hft_search.attrs import FAILURE_KIND_ATTR, SURPLUS_ATTR  # the attributes the workers set; home: attrs
from hft_search.workers._admission import Objective
from hft_search.workers._counting import (
    baseline_runs,
    counted_trials,
    counts,
    has_verdict,
    holds_place,
    no_result,
    shortfall,
)
from hft_search.workers._handback import requeue_running
from hft_search.workers._loop import MAX_POLL_S, optimize
from hft_search.workers._outage import RECONNECT_WINDOW_S
from hft_search.workers._seeds import resumed_seed, worker_seed
from hft_search.workers._signals import AbortTrial, GracefulStop, StopRequested

__all__ = [
    "FAILURE_KIND_ATTR",
    "MAX_POLL_S",
    "RECONNECT_WINDOW_S",
    "SURPLUS_ATTR",
    "AbortTrial",
    "GracefulStop",
    "Objective",
    "StopRequested",
    "baseline_runs",
    "counted_trials",
    "counts",
    "has_verdict",
    "holds_place",
    "no_result",
    "optimize",
    "requeue_running",
    "resumed_seed",
    "shortfall",
    "worker_seed",
]
