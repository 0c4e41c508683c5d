"""The sections of a spec that say what a study fine-tunes on and how it scores: ``data``, ``model``, ``cv``."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from hft_search.spec._model import SpecModel


class Section(SpecModel):
    """Base of the spec's sections: an unknown field is a typo and is refused, and a section never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(Section):
    """Where the labelled text comes from: local files (``train``/``test``) or a hub dataset (``dataset``)."""

    train: str | None = Field(None, description="local csv/tsv/jsonl/parquet file (relative to the spec's folder)")
    test: str | None = Field(None, description="held-out local file scored by `hft-search train`")
    dataset: str | None = Field(None, description="hub dataset name (e.g. glue), instead of local files")
    config: str | None = Field(None, description="hub dataset configuration (e.g. sst2)")
    train_split: str = "train"
    test_split: str | None = Field(None, description="hub split used as the test set (e.g. validation)")
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_train_samples: int | None = Field(None, ge=2, description="stratified, seeded subsample of the training rows")
    max_test_samples: int | None = Field(None, ge=1)
    unlabeled: str | None = Field(None, description="local file of texts without labels: the distillation "
                                  "teacher labels them for the student (rows equal to labelled or test rows dropped)")
    unlabeled_column: str | None = Field(None, description="its text column (None: text_column)")
    max_unlabeled_samples: int | None = Field(None, ge=1, description="seeded subsample of the unlabeled rows")
    seed: int = 0
    deduplicate: bool = Field(False, description="drop exact copies of earlier training rows (same text and "
                              "label); off: they are counted in a warning")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.train is None) == (self.dataset is None):
            raise ValueError("give exactly one of `train` (a local file) or `dataset` (a hub dataset name)")
        if self.dataset is None and self.test_split is not None:
            raise ValueError("`test_split` is for hub datasets; for local files give `test: PATH`")
        return self


class ModelSpec(Section):
    """The pretrained model: ``minilm`` (the packaged all-MiniLM-L6-v2), a local path, or a hub name."""

    name: str = "minilm"
    max_length: int = Field(128, ge=8, le=8192)
    revision: str | None = None
    family: str | None = Field(None, description="architecture family (bert, gpt2, llama, qwen2, ...); inferred "
                               "from the model's config, which must match it when given")
    pooling: Literal["cls", "mean", "last"] | None = Field(
        None, description="token states the head reads (None: what the checkpoint was trained for: "
        "sentence-transformers' pooling config, else cls for encoders and last for decoders)")


MAX_CV_REPEATS = 100
"""Most repeats of the k-fold: the search's repeats and the confirmation's fresh ones share a seed sequence."""


class CVSpec(Section):
    folds: int = Field(3, ge=2, description="k of the (stratified) k-fold")
    shuffle: bool = True
    seed: int = 0
    metric: Literal["accuracy", "f1_macro", "f1", "mcc", "roc_auc"] = "accuracy"
    repeats: int = Field(1, ge=1, le=MAX_CV_REPEATS, description="repeated k-fold: k x repeats fold scores per "
                         "trial, a new split seed per repeat (cv.seed + repeat), the same splits in every trial")
    group_column: str | None = Field(None, min_length=1, description="data column naming each row's source: "
                                     "rows of one group never straddle folds (StratifiedGroupKFold)")

    @model_validator(mode="after")
    def _repeats_shuffle(self) -> CVSpec:
        if self.repeats > 1 and not self.shuffle:
            raise ValueError("cv.repeats > 1 needs cv.shuffle: true (unshuffled repeats are the same folds)")
        return self
