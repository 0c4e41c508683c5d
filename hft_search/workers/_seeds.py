"""Sampler seeds of the processes that run one study: each draws its own sequence of configurations.

Every worker builds its own sampler. With the spec's seed in all of them, the random start-up trials of TPE (and
every trial of random search) would be the same configurations in every worker, and a resumed study would replay
the first run's: fine-tuned twice. Folds and training seeds stay the spec's, so trials remain comparable.
"""

from __future__ import annotations

import os
import socket
import zlib
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

if TYPE_CHECKING:
    from hft_search.spec import StudySpec


def worker_seed(spec: StudySpec) -> int:
    """The sampler seed of one worker (``hft-search worker``, ``launch``): the spec's seed mixed with this host
    and process, so that workers started together draw different configurations."""
    return (spec.study.seed + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())) % 2**32


def resumed_seed(spec: StudySpec, study: optuna.Study) -> int:
    """The sampler seed of a process that joins or resumes an existing study.

    With the spec's seed again, the sampler would replay the sequence of the first process: its random
    start-up trials, or every trial of random search, would be configurations already fine-tuned. Mixing in
    how many trials the study holds gives each resume a new sequence that is still a function of the study
    (resuming the same study twice draws the same). Trials still RUNNING mean another process is at work on
    the study right now, at the same count perhaps: then this process's id is mixed in too.
    """
    trials = study.get_trials(deepcopy=False)
    parts = f"{spec.study.seed}:{len(trials)}"
    if any(t.state == TrialState.RUNNING for t in trials):
        parts += f":{socket.gethostname()}:{os.getpid()}"
    return zlib.crc32(parts.encode())
