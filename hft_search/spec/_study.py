"""The ``study`` section: how the search runs (sampler, pruner, budget, storage, baseline, confirmation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from hft_search.spec._secrets import StorageUrl
from hft_search.spec._sections import MAX_CV_REPEATS, Section


class BaselineOptions(Section):
    """The tuned baseline: a learning-rate sweep of the plain full fine-tune (``hft_search.baseline``)."""

    trials: int = Field(3, ge=1, le=20, description="learning rates of the sweep, spread over the searched range")


class ConfirmOptions(Section):
    """The confirmation round after the search (``hft_search.confirm``)."""

    top: int = Field(3, ge=1, le=20, description="distinct configurations re-fitted with the best baseline")
    repeats: int = Field(1, ge=1, le=MAX_CV_REPEATS, description="fresh repeats of the k-fold they are fitted on")


class WarmStart(Section):
    """Seed a new study with the ``top`` best configurations of an earlier study (``hft-search`` stored)."""

    study: str = Field(min_length=1, description="name of the earlier study")
    storage: StorageUrl | None = Field(None, description="its storage URL (None: this study's storage)")
    top: int = Field(3, ge=1, description="how many of its best COMPLETE trials to enqueue")


class StudyOptions(Section):
    direction: Literal["maximize"] = Field(
        "maximize", description="always maximize: every cv.metric is better when higher (early stopping, lifts "
        "and the confirmation round rely on it)")
    objectives: Literal["score", "score+trainable_fraction", "score+student_params"] = Field(
        "score", description="single objective, or also minimise the trainable fraction / student size (Pareto)"
    )
    sampler: Literal["tpe", "random", "gp", "cmaes", "grid", "nsga2"] = "tpe"
    pruner: Literal["successive_halving", "hyperband", "wilcoxon", "median", "none"] = Field(
        "successive_halving", description="successive_halving/hyperband: multi-fidelity, decided after every "
        "fold-epoch; wilcoxon/median: between folds (wilcoxon needs cv.folds >= 5, see PRUNER_MIN_FOLDS)"
    )
    n_trials: int = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0, description="seconds; stop starting new trials after this")
    storage: StorageUrl | None = Field(
        None, description="URL; None: $HFT_SEARCH_STORAGE, else sqlite:///hft.db in the CWD")
    seed: int = 0
    allow_repeats: bool = Field(
        False, description="fine-tune a configuration the study already scored when the sampler proposes it "
        "again (folds and seeds are the study's, so a repeat measures only run-to-run noise); "
        "false: the trial reuses the verdict of the earlier COMPLETE trial (PRUNED and FAILED ones are fitted again)")
    heartbeat_interval: int = Field(60, ge=1, description="seconds between worker heartbeats (RDB storages)")
    grace_period: int | None = Field(None, ge=1, description="seconds without heartbeat before a trial is retried")
    max_retries: int = Field(3, ge=0, description="times a trial of a dead worker is re-queued")
    baseline: BaselineOptions | Literal[False] = Field(
        BaselineOptions(), description="a new study starts with a learning-rate sweep of the plain full fine-tune "
        "(outside n_trials); every lift is measured against its best (true: {trials: 3}; false: none)")
    confirm: ConfirmOptions | Literal[False] = Field(
        ConfirmOptions(), description="after the search, re-fit the top configurations and the best baseline on "
        "fresh folds; the printed winner comes from that round (false: skip)")
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="configurations (dotted knob: value) "
                                          "tried first, after the baseline")
    warm_start: WarmStart | None = Field(None, description="enqueue the best configurations of an earlier study")
    portfolio: Literal["literature", "none"] = Field(
        "literature", description="enqueue, after the baseline, the cited small-data recipes of "
        "hft_search/portfolio.py that the search space can express (false or none: off)")
    max_consecutive_failures: int = Field(
        3, ge=1, description="a worker stops (exit 1) after this many trials in a row fail from an exception "
        "(a bug, not out of memory)")

    @field_validator("direction", mode="before")
    @classmethod
    def _maximize_only(cls, value: Any) -> Any:
        """One clear message for ``minimize`` (or any other value): every metric hft-search scores is better when
        higher, so a minimized score would make early stopping keep the worst epoch and every lift change sign."""
        if value != "maximize":
            raise ValueError(f"{value!r} is not supported: every cv.metric is better when higher, so a study "
                             "always maximizes its score; write direction: maximize, or leave the field out")
        return value

    @field_validator("portfolio", mode="before")
    @classmethod
    def _portfolio_off(cls, value: Any) -> Any:
        """``false`` reads as ``none``: a value, not a missing one, so that ``to_yaml`` (which leaves out every
        None) writes it and the spec loads back with the portfolio still off."""
        return "none" if value is False or value is None else value

    @field_validator("baseline", "confirm", mode="wrap")
    @classmethod
    def _on_off(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        """``true`` means the options' defaults, ``false`` turns it off, a mapping sets the options."""
        options = {"baseline": BaselineOptions, "confirm": ConfirmOptions}[info.field_name]
        if value is False or isinstance(value, options):
            return value
        if value is True or isinstance(value, Mapping):
            return options.model_validate({} if value is True else dict(value))
        raise ValueError(f"must be true, false or a mapping such as {options().model_dump()}")
