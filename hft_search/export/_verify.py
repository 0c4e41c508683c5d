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

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hft_search.caching import Cache
from hft_search.cv import CrossValidator
from hft_search.exceptions import ExportError
from hft_search.export._train import search_setting
from hft_search.spec import StudySpec, load_spec, read_spec_document

CUDA_TOLERANCE = 0.01
"""Largest absolute difference of a fold score that still agrees on CUDA (one point of accuracy)."""

FINGERPRINT = re.compile(r"[0-9a-f]{16}")
"""A data fingerprint as :func:`hft_search.data.fingerprint` writes it: 16 hexadecimal digits, a string."""


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


def load_exported(path: str | Path) -> StudySpec:
    """Read a spec written by ``hft-search export``; one line when it is not one (no provenance with fold
    scores), before its knobs are judged as a hand-written spec's would be."""
    raw = read_spec_document(path)
    provenance = raw.get("provenance") if isinstance(raw, Mapping) else None
    if not isinstance(provenance, Mapping) or not provenance.get("fold_scores"):
        raise ExportError(f"{path} is not an exported spec (no provenance with fold scores): verify re-runs a "
                          "spec written by `hft-search export --study NAME -o best.yaml`")
    return load_spec(path)


def _recorded(spec: StudySpec) -> tuple[list[float], list[int] | None, str]:
    """The recorded fold scores, seeds and data fingerprint, checked against each other: verify compares a
    re-run with the record, so a record that contradicts itself (an edited value) or cannot pin the data
    (no fingerprint, or one YAML read as a number) is refused rather than trusted."""
    provenance = spec.provenance or {}
    scores = provenance.get("fold_scores")
    if not scores or not all(isinstance(s, int | float) and math.isfinite(s) for s in scores):
        raise ExportError(f"spec {spec.name!r} has no recorded fold scores (provenance.fold_scores); verify "
                          "checks a spec written by `hft-search export`")
    values = [float(s) for s in scores]
    for key, summary, what in (("value", float(np.mean(values)), "mean"), ("std", float(np.std(values)), "std")):
        found = provenance.get(key)
        if (key == "value" or found is not None) and not (
                isinstance(found, int | float) and math.isclose(found, summary, rel_tol=1e-9, abs_tol=1e-12)):
            raise ExportError(f"spec {spec.name!r}: provenance.{key} {found!r} is not the {what} {summary!r} of "
                              "provenance.fold_scores; the record was edited or damaged: export the trial again")
    fingerprint = provenance.get("data_fingerprint")
    if not isinstance(fingerprint, str) or not FINGERPRINT.fullmatch(fingerprint):
        why = ("is missing" if fingerprint is None else
               f"is {fingerprint!r}, not a string of 16 hexadecimal digits (YAML reads unquoted digits as a "
               "number: quote it)")
        raise ExportError(f"spec {spec.name!r}: provenance.data_fingerprint {why}; without it verify cannot tell "
                          "the search's data from other data: export the trial again")
    return values, provenance.get("seeds"), fingerprint


def verify_spec(spec: StudySpec, folds: list[int] | None = None) -> Verification:
    """Re-run the folds ``folds`` (default: all recorded) of an exported spec and compare with the record.

    Raises:
        ExportError: the spec has no recorded fold scores, its record contradicts itself or has no data
            fingerprint, a fold was not recorded, or the data changed since the search (its fingerprint
            differs): a re-run could not be compared.
    """
    recorded, seeds, expected = _recorded(spec)
    wanted = list(range(len(recorded))) if folds is None else folds
    missing = [f for f in wanted if not 0 <= f < len(recorded)]
    if missing:
        raise ExportError(f"--folds: fold(s) {', '.join(map(str, missing))} were not recorded; the trial recorded "
                          f"folds 0 to {len(recorded) - 1}")
    cv_spec, config = search_setting(spec)
    cv = CrossValidator(cv_spec, cache=Cache(None))
    if cv.data.fingerprint != expected:
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
