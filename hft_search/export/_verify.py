"""``hft-search verify``: re-run an exported configuration's cross-validation and compare it, fold by fold,
with the scores the search recorded.

Why: the number a user carries away from a study is only worth something if the configuration that
``export`` wrote really produces it. Verify re-fits the recorded folds with the recorded seeds through the
very cross-validator the search used (:class:`~hft_search.cv.CrossValidator`), without the study's cache
(the tokenized data, teacher and importance scores are computed again), and prints the recorded score next
to the re-run score.

Agreement: on the CPU the fine-tunes are deterministic for a given torch thread count (the order of a matmul's
sums follows it), so verify runs with the count the trial recorded (``provenance.torch_threads``; a worker of
``hft-search launch`` runs with its share of the cores) and the scores must be **bit-identical**. On CUDA,
bf16 autocast and non-deterministic kernels (atomics in reductions) make small differences normal; there a
fold agrees within :data:`CUDA_TOLERANCE` (absolute, in units of the metric).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from hft_search.caching import Cache
from hft_search.cv import CrossValidator
from hft_search.exceptions import ExportError
from hft_search.export._train import search_setting
from hft_search.spec import StudySpec

CUDA_TOLERANCE = 0.01
"""Largest absolute difference of a fold score that still agrees on CUDA (one point of accuracy)."""


@dataclass(frozen=True)
class FoldCheck:
    fold: int
    seed: int
    recorded: float
    rerun: float
    best_epoch: int

    def agrees(self, tolerance: float) -> bool:
        return self.recorded == self.rerun if tolerance == 0 else abs(self.recorded - self.rerun) <= tolerance


@dataclass
class Verification:
    """The outcome of :func:`verify_spec`: one :class:`FoldCheck` per re-run fold."""

    metric: str
    device: str
    tolerance: float
    checks: list[FoldCheck] = field(default_factory=list)
    threads: int | None = None  # torch threads of the re-run
    threads_recorded: bool = False  # whether that count is the one the trial recorded

    @property
    def agrees(self) -> bool:
        return all(check.agrees(self.tolerance) for check in self.checks)

    def table(self) -> str:
        rule = "bit-identical" if self.tolerance == 0 else f"within {self.tolerance:g}"
        lines = [f"fold  seed  recorded {self.metric:<10} re-run {self.metric:<10} difference  best epoch"]
        for c in self.checks:
            mark = "ok" if c.agrees(self.tolerance) else "DIFFERS"
            lines.append(f"{c.fold:>4}  {c.seed:>4}  {c.recorded:<19.6f} {c.rerun:<17.6f} {c.rerun - c.recorded:+.2e}"
                         f"   {c.best_epoch:>3}  {mark}")
        verdict = "agree" if self.agrees else "DO NOT agree"
        if self.threads is not None:
            lines.append(f"re-run with {self.threads} torch thread(s), " + (
                "as recorded by the trial" if self.threads_recorded else "this process's (the trial recorded none)"))
        lines.append(f"{len(self.checks)} fold(s) on {self.device}: the re-run scores {verdict} with the recorded "
                     f"ones ({rule})")
        return "\n".join(lines)


def _recorded(spec: StudySpec) -> tuple[list[float], list[int] | None]:
    provenance = spec.provenance or {}
    scores = provenance.get("fold_scores")
    if not scores:
        raise ExportError(f"spec {spec.name!r} has no recorded fold scores (provenance.fold_scores); verify "
                          "checks a spec written by `hft-search export`")
    return [float(s) for s in scores], provenance.get("seeds")


def verify_spec(spec: StudySpec, folds: list[int] | None = None) -> Verification:
    """Re-run the folds ``folds`` (default: all recorded) of an exported spec and compare with the record.

    Raises:
        ExportError: the spec has no recorded fold scores, a fold was not recorded, or the data changed
            since the search (its fingerprint differs): a re-run could not be compared.
    """
    recorded, seeds = _recorded(spec)
    wanted = list(range(len(recorded))) if folds is None else folds
    missing = [f for f in wanted if not 0 <= f < len(recorded)]
    if missing:
        raise ExportError(f"--folds: fold(s) {', '.join(map(str, missing))} were not recorded; the trial recorded "
                          f"folds 0 to {len(recorded) - 1}")
    cv_spec, config = search_setting(spec)
    cv = CrossValidator(cv_spec, cache=Cache(None))
    expected = (spec.provenance or {}).get("data_fingerprint")
    if expected and cv.data.fingerprint != expected:
        raise ExportError(f"the training data changed since the search (fingerprint {cv.data.fingerprint}, recorded "
                          f"{expected}); restore the data of the study to verify it")
    tolerance = CUDA_TOLERANCE if cv.device.type == "cuda" else 0.0
    recorded_threads = (spec.provenance or {}).get("torch_threads")
    result = Verification(spec.cv.metric, str(cv.device), tolerance, threads_recorded=recorded_threads is not None)
    with _torch_threads(recorded_threads) as result.threads:
        for fold in wanted:
            if seeds is not None and seeds[fold] != cv.fold_seed(fold):
                raise ExportError(f"fold {fold} was recorded with seed {seeds[fold]}, but cv.seed gives "
                                  f"{cv.fold_seed(fold)}; restore the spec's cv section")
            fit = cv.fit_fold(fold, config)
            result.checks.append(FoldCheck(fold, fit.seed, recorded[fold], float(fit.score), fit.best_epoch))
            del fit
    return result


@contextmanager
def _torch_threads(count: int | None) -> Iterator[int]:
    """Run the block with ``count`` torch intra-op threads (None: as they are); the previous count is restored."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(int(count))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
