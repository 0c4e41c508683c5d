"""Placing workers on a Ray cluster (a local one by default): ``hft-search launch SPEC --workers N``.

Ray contributes placement and nothing else. Each Ray task runs the ordinary worker loop
(:func:`hft_search.study.run_study`) against the shared storage, so the guarantees stay the storage's:
exactly ``n_trials`` counted trials, heartbeats, and the retry of a dead worker's trial after its grace period.
What Ray adds:

* **fractional GPUs**: ``gpus_per_worker=0.25`` lets Ray put four workers, four trials at a time, on one GPU
  (Ray sets ``CUDA_VISIBLE_DEVICES`` for each; the trials must fit in a quarter of its memory);
* **a share of the CPU each**: every worker reserves ``cpus_per_worker`` CPUs (default: the largest node's
  CPUs, or the cluster's divided by the workers, whichever is smaller) and sets its torch thread count to that
  share (at least 1). Two workers that each run as many threads as the machine has cores fight over them
  (the quickstart on 2 cores: about 7 minutes with two such workers against 2.5 with one);
* **restarting a lost worker**: a worker process that dies (killed, its node lost) is started again, up to
  :data:`WORKER_RESTARTS` times, and joins the study where it stands; its trial was retried by the heartbeat;
* **one command for a whole cluster**, with every worker's log in the launching terminal, prefixed with the
  worker's name.

Ctrl-C in the launching terminal cancels every worker: Ray interrupts each one's main thread, which
:class:`~hft_search.workers.AbortTrial` turns into a :class:`KeyboardInterrupt` inside the running trial's
objective (never inside Optuna's own storage calls); the trial is handed back (FAIL without a reason, re-queued,
as for a worker stopped twice today), a worker between trials just leaves, and the launch ends with
:class:`KeyboardInterrupt`. An SQLite file cannot be shared between machines: a cluster of more than one node
with an SQLite URL is refused before anything starts.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hft_search.exceptions import ClusterError, HFTSearchError, StorageError
from hft_search.inputs import check_storage_target
from hft_search.spec import StudySpec
from hft_search.storage import install_log_masking, mask_url, resolve_storage_url
from hft_search.study import load_study, open_study, run_study, target_trials
from hft_search.urls import absolute_file_url as absolute_file_url  # its home before hft_search.urls
from hft_search.workers import AbortTrial, Objective, counted_trials, worker_seed

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = 'pip install "hft_search[ray]"'

WORKER_RESTARTS = 3
"""How often Ray starts a worker again whose process died (not one that raised: that is a verdict)."""

CANCEL_WAIT_S = 60.0
"""How long Ctrl-C waits for the cancelled workers to hand their trials back before Ray is shut down."""

WORKER_LOG_FORMAT = "%(asctime)s {name} %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class WorkerReport:
    """What one Ray worker says when it leaves: where it ran and with how many torch threads."""

    name: str
    host: str
    pid: int
    threads: int


@dataclass
class LaunchOutcome:
    """The end of a launch: the study's counted trials against ``n_trials``, and every worker's report or error."""

    counted: int
    n_trials: int
    workers: list[WorkerReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.counted >= self.n_trials


def use_threads(threads: int) -> int:
    """Set this process's torch intra-op thread count (its share of the CPU) and return what torch now uses.

    Why: torch starts as many threads as the machine has cores; two workers on one machine then run twice as
    many threads as cores and spend their time switching between them instead of computing.
    """
    import torch

    if threads < 1:
        raise ClusterError(f"--threads {threads}: a worker needs at least one thread; give a whole number >= 1.")
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def thread_share(cpus: float) -> int:
    """The whole threads of a CPU share (at least one): 2.0 CPUs → 2 threads, 0.5 → 1."""
    return max(1, math.floor(cpus + 1e-9))


def import_ray() -> ModuleType:
    """Ray, or a :class:`ClusterError` saying how to install it (an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"`hft-search launch` places workers with Ray, which is not installed. "
                           f"Install it with: {RAY_INSTALL_HINT}") from None
    return ray


def _file_backed(url: str) -> bool:
    return url.partition(":")[0].lower() in ("sqlite", "journal")


def _alive_nodes(ray: ModuleType) -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


def _check_storage_reaches_all_nodes(url: str, nodes: list[dict[str, Any]]) -> None:
    if url.partition(":")[0].lower() == "sqlite" and len(nodes) > 1:
        raise StorageError(
            f"the Ray cluster has {len(nodes)} nodes, and an SQLite file ({mask_url(url)}) can only be shared by "
            "workers on one machine. Use PostgreSQL: --storage postgresql+psycopg://USER:PASSWORD@HOST:5432/DB "
            "(see docs/distributed.md), or launch on one node.")


def default_cpus_per_worker(nodes: list[dict[str, Any]], workers: int) -> float:
    """The cluster's CPUs divided by the workers, capped at the largest node's CPUs (a worker runs on one node),
    rounded down to Ray's resource precision."""
    cpus = [float(node.get("Resources", {}).get("CPU", 0.0)) for node in nodes]
    share = min(sum(cpus) / workers, max(cpus, default=0.0))
    if share <= 0:
        raise ClusterError("the Ray cluster has no CPUs to place workers on; start its nodes with CPUs, or pass "
                           "--cpus-per-worker 0.1 to place them anyway.")
    return math.floor(share * 10_000) / 10_000


def _configure_worker_logging(name: str) -> None:
    """Each Ray worker process logs to its stderr, which Ray forwards to the launching terminal; the worker's
    name in every line tells the workers apart, and passwords are masked as everywhere."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(WORKER_LOG_FORMAT.format(name=name), datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    install_log_masking()


def _run_ray_worker(name: str, spec: StudySpec, url: str, study_name: str,
                    objective_factory: Callable[[], Objective] | None) -> WorkerReport:
    """The body of one Ray task: the ordinary worker loop, with this worker's thread share."""
    import ray

    _configure_worker_logging(name)
    cpus = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))
    threads = use_threads(thread_share(cpus))
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES") or "none"
    logger.info("%s on %s (pid %d): %d torch threads for %.4g CPUs; GPUs %s", name, socket.gethostname(),
                os.getpid(), threads, cpus, gpus)
    objective = objective_factory() if objective_factory is not None else None
    with AbortTrial() as abort:  # Ray's cancel (Ctrl-C of launch) interrupts this thread: only in a trial
        run_study(spec, storage=url, study_name=study_name, objective=objective, sampler_seed=worker_seed(spec),
                  abort=abort)
    return WorkerReport(name=name, host=socket.gethostname(), pid=os.getpid(), threads=threads)


def launch(spec: StudySpec, *, workers: int, address: str | None = None, gpus_per_worker: float = 0.0,
           cpus_per_worker: float | None = None, storage: str | None = None, study_name: str | None = None,
           objective_factory: Callable[[], Objective] | None = None,
           spec_file: str | Path | None = None) -> LaunchOutcome:
    """Run the spec's study with ``workers`` workers placed by Ray, until ``n_trials`` count or all leave.

    Args:
        spec: the study spec (every worker uses it; its data and model must be reachable from every node).
        workers: how many workers, i.e. trials at a time.
        address: a Ray cluster (``auto``, ``ray://HOST:PORT``); None starts a local Ray instance, or uses the
            one this process is already connected to.
        gpus_per_worker: GPUs each worker reserves; fractions pack several workers on one GPU.
        cpus_per_worker: CPUs each worker reserves and uses as torch threads (see :func:`default_cpus_per_worker`).
        storage: the storage URL (else ``$HFT_SEARCH_STORAGE``, the spec's, the default).
        study_name: the study (default: the spec's name).
        objective_factory: builds each worker's objective in its process instead of the CV objective (tests,
            benchmarks of the storage); must be picklable.
        spec_file: the file ``spec`` was read from; a storage file may not replace it (:mod:`hft_search.inputs`).

    Raises:
        ClusterError: Ray is missing or the arguments cannot be placed. StorageError: an SQLite URL on
            several nodes, or an unreachable storage. KeyboardInterrupt: after Ctrl-C, once the workers have
            handed their trials back.
    """
    if workers < 1:
        raise ClusterError(f"--workers {workers}: launch at least one worker.")
    if gpus_per_worker < 0 or (cpus_per_worker is not None and cpus_per_worker <= 0):
        raise ClusterError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0 (fractions allowed).")
    if spec.device == "cuda" and gpus_per_worker == 0:
        raise ClusterError("the spec asks for device: cuda, and Ray hides the GPUs from workers that reserve none: "
                           "pass --gpus-per-worker 1 (or 0.5, 0.25 to pack 2 or 4 trials on a GPU).")
    ray = import_ray()
    url = resolve_storage_url(storage, spec.study.storage)
    url = absolute_file_url(url) if _file_backed(url) else url
    check_storage_target(url, spec, spec_file)
    name = study_name or spec.name
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(ray, address)
    try:
        nodes = _alive_nodes(ray)
        _check_storage_reaches_all_nodes(url, nodes)
        if gpus_per_worker == 0 and ray.cluster_resources().get("GPU", 0) > 0:
            logger.warning("the cluster has GPUs, but --gpus-per-worker is 0: the workers run on the CPU")
        cpus = cpus_per_worker if cpus_per_worker is not None else default_cpus_per_worker(nodes, workers)
        open_study(spec, storage=url, study_name=name)  # created once here: a bad storage fails before placing
        logger.info("launching %d workers (%.4g CPUs, %.4g GPUs each) on %d Ray node(s), storage %s", workers,
                    cpus, gpus_per_worker, len(nodes), mask_url(url))
        task = ray.remote(_run_ray_worker)
        refs = [task.options(name=f"worker-{i}", num_cpus=cpus, num_gpus=gpus_per_worker,
                             max_retries=WORKER_RESTARTS).remote(f"worker-{i}", spec, url, name, objective_factory)
                for i in range(workers)]
        reports, errors = _wait_for(ray, refs)
    finally:
        if started_here:
            ray.shutdown()
    study = load_study(name, url)
    return LaunchOutcome(counted=counted_trials(study), n_trials=target_trials(spec), workers=reports, errors=errors)


def _init_ray(ray: ModuleType, address: str | None) -> None:
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = address or "a local instance"
        raise ClusterError(f"cannot start or reach the Ray cluster ({where}): {' '.join(str(error).split())}. "
                           "Check the address (`ray status` on the head node), or leave out --address to run "
                           "on this machine.") from None


def _wait_for(ray: ModuleType, refs: list[Any]) -> tuple[list[WorkerReport], list[str]]:
    """Every worker's report or error; on Ctrl-C, cancel them all, let them hand back, and re-raise."""
    reports: list[WorkerReport] = []
    errors: list[str] = []
    pending = list(refs)
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in finished:
                try:
                    reports.append(ray.get(ref))
                except HFTSearchError as error:  # Ray re-raises the worker's error as a subclass of it
                    errors.append(_worker_error(error))
                except ray.exceptions.RayError as error:
                    errors.append(_worker_error(error))
    except KeyboardInterrupt:
        logger.warning("interrupted: cancelling %d workers; their running trials are handed back (re-queued)",
                       len(pending))
        for ref in pending:
            ray.cancel(ref)
        ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_S)
        raise
    for error in errors:
        logger.error("a worker stopped: %s", error)
    return reports, errors


def _worker_error(error: BaseException) -> str:
    """A worker's error without Ray's traceback of the remote task, password masked."""
    cause = getattr(error, "cause", None) or error
    return mask_url(str(cause).strip())
