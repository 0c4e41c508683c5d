"""The whole study spec, and the hash that says whether two specs describe comparable trials."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator

from hft_search.spec._groups import SWITCHABLE_GROUPS, TrainingConfig
from hft_search.spec._secrets import MASKED, REVEAL_SECRETS
from hft_search.spec._sections import CVSpec, DataSpec, ModelSpec, Section
from hft_search.spec._space import CategoricalDist, Distribution
from hft_search.spec._study import StudyOptions

SPEC_FORMAT_VERSION = 1
"""The spec format this version reads; a spec of a newer one is refused (``version``)."""

ADDED_FIELDS: dict[tuple[str, str], Any] = {
    ("cv", "repeats"): 1, ("cv", "group_column"): None, ("model", "pooling"): None, ("data", "unlabeled"): None,
    ("data", "unlabeled_column"): None, ("data", "max_unlabeled_samples"): None, ("data", "deduplicate"): False,
}
"""Fields of the hashed sections (:meth:`StudySpec.search_hash`) added after studies existed, with their defaults."""


class StudySpec(Section):
    """A whole study: what to fine-tune on, how to score, what to search, where to store it."""

    name: str = Field(min_length=1, max_length=200)
    data: DataSpec
    model: ModelSpec = ModelSpec()
    cv: CVSpec = CVSpec()
    search_space: dict[str, Distribution] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    study: StudyOptions = StudyOptions()
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    cache_dir: str | None = Field(None, description="on-disk cache (None: .hft_cache beside the storage or spec)")
    version: int = Field(SPEC_FORMAT_VERSION, ge=1, description="spec format; a newer one is refused")
    provenance: Annotated[dict[str, Any] | None, MASKED] = Field(
        None, description="written by `hft-search export`; informational (its URLs are secrets)")

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value > SPEC_FORMAT_VERSION:
            raise ValueError(f"format {value} is newer than this hft-search reads ({SPEC_FORMAT_VERSION}): "
                             f"upgrade hft-search, or write version: {SPEC_FORMAT_VERSION}")
        return value

    def enabled_groups(self) -> dict[str, bool | None]:
        """Each switchable group → True/False when decided by the spec, None when the search decides."""
        decided: dict[str, bool | None] = {}
        for group in SWITCHABLE_GROUPS:
            key = f"{group}.enabled"
            if key in self.search_space:
                decided[group] = None
            elif key in self.fixed:
                decided[group] = bool(self.fixed[key])
            else:
                named = [k for k in (*self.search_space, *self.fixed) if k.startswith(group + ".")]
                decided[group] = bool(named)
        return decided

    def max_epochs(self) -> int:
        """The most epochs a fold can train: ``training.epochs`` fixed, the top of its range, or the default."""
        dist = self.search_space.get("training.epochs")
        if isinstance(dist, CategoricalDist):
            return int(max(dist.choices))
        if dist is not None:
            return int(dist.bounds[1])
        return int(self.fixed.get("training.epochs", TrainingConfig.model_fields["epochs"].default))

    def search_hash(self) -> str:
        """A hash of what makes trials comparable (data, model, cv, search space, fixed knobs): a study may
        only be resumed with a spec of the same hash. ``model.family`` is left out: it is read from the model,
        so a spec that names it describes the same trials as one that does not."""
        payload = self.model_dump(mode="json", include={"data", "model", "cv", "search_space", "fixed"},
                                  exclude={"model": {"family"}})
        # Fields added later count only when set, so that a study made before them keeps its hash and resumes.
        for (section, key), default in ADDED_FIELDS.items():
            if payload[section][key] == default:
                del payload[section][key]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The spec as a runnable YAML file, its storage URLs as given (password included: the file must run);
        every other dump masks them (:data:`SecretUrl`)."""
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True, context={REVEAL_SECRETS: True})
        return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
