"""The study spec: a YAML file validated into :class:`StudySpec`, and the hybrid knobs it searches.

Why pydantic models for the knob groups: every knob has one documented default and one valid range, written
once as a field of a group model (:class:`FreezeConfig`, :class:`ImportanceConfig`, ...). The same models
validate a spec's ``search_space`` bounds and ``fixed`` values, and later validate each trial's resolved
configuration (:class:`HybridConfig`), so a range can never drift between "what a spec may say" and "what the
engine accepts".

All problems of a spec are collected and raised together as one :class:`~hft_search.exceptions.SpecError`
whose lines name the field path (``search_space.training.learning_rate: low must be below high``).

The package keeps one concept per private module, and every public name is importable from here:

- ``_groups/``: the knob groups, one module each, and the registry :data:`GROUPS` that lists them;
- ``_hybrid``: :class:`HybridConfig`, one resolved configuration of every group;
- ``_space``: the search-space distributions; ``_sections`` and ``_study``: the spec's other sections;
- ``_study_spec``: :class:`StudySpec` and its ``search_hash``; ``_secrets``: URL fields masked in every dump;
- ``_knobs``: knob-by-knob validation; ``_checks``: the cross-field (contradiction) checks; ``_layers``: the
  checks against the model's shape; ``_loading``: bounded YAML loading and :func:`spec_from_dict`.

This package imports nothing of the project except :mod:`hft_search.exceptions` and :mod:`hft_search.urls`.
"""

from hft_search.spec._checks import PRUNER_MIN_FOLDS, knob_range
from hft_search.spec._groups import (
    GROUPS,
    SWITCHABLE_GROUPS,
    DistillConfig,
    FreezeConfig,
    ImportanceConfig,
    LoraConfig,
    TrainingConfig,
    knob_default,
    knob_names,
)
from hft_search.spec._groups._base import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_LEARNING_RATE,
    MAX_LORA_RANK,
    MIN_LEARNING_RATE,
)
from hft_search.spec._hybrid import HybridConfig
from hft_search.spec._layers import check_against_layers
from hft_search.spec._loading import MAX_SPEC_BYTES, MAX_SPEC_VALUES, load_spec, read_spec_document, spec_from_dict
from hft_search.spec._secrets import MASKED, REVEAL_SECRETS, SecretUrl, StorageUrl
from hft_search.spec._sections import MAX_CV_REPEATS, CVSpec, DataSpec, ModelSpec
from hft_search.spec._space import CategoricalDist, Distribution, FloatDist, IntDist, grid_values, out_of_range
from hft_search.spec._study import BaselineOptions, ConfirmOptions, StudyOptions, WarmStart
from hft_search.spec._study_spec import ADDED_FIELDS, SPEC_FORMAT_VERSION, StudySpec

__all__ = [
    "ADDED_FIELDS",
    "GROUPS",
    "MASKED",
    "MAX_BATCH_SIZE",
    "MAX_CV_REPEATS",
    "MAX_EPOCHS",
    "MAX_LEARNING_RATE",
    "MAX_LORA_RANK",
    "MAX_SPEC_BYTES",
    "MAX_SPEC_VALUES",
    "MIN_LEARNING_RATE",
    "PRUNER_MIN_FOLDS",
    "REVEAL_SECRETS",
    "SPEC_FORMAT_VERSION",
    "SWITCHABLE_GROUPS",
    "BaselineOptions",
    "CVSpec",
    "CategoricalDist",
    "ConfirmOptions",
    "DataSpec",
    "DistillConfig",
    "Distribution",
    "FloatDist",
    "FreezeConfig",
    "HybridConfig",
    "ImportanceConfig",
    "IntDist",
    "LoraConfig",
    "ModelSpec",
    "SecretUrl",
    "StorageUrl",
    "StudyOptions",
    "StudySpec",
    "TrainingConfig",
    "WarmStart",
    "check_against_layers",
    "grid_values",
    "knob_default",
    "knob_names",
    "knob_range",
    "load_spec",
    "out_of_range",
    "read_spec_document",
    "spec_from_dict",
]
