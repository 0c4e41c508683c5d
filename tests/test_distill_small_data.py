"""Distillation that learns at small data (issue 20): PKD's hidden-state loss, DistilBERT's alternate-block
student, and an unlabeled transfer set that the per-fold teacher labels, never holding a validation or test row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_sentences, write_csv

from hft_search import spec_from_dict
from hft_search.caching import Cache
from hft_search.cv import CrossValidator, TeacherOutputs, student_split
from hft_search.data import UNLABELED, TokenizedSplit, load_data
from hft_search.exceptions import SpecError
from hft_search.models import BaseModel, layers_of
from hft_search.spec import HybridConfig
from hft_search.strategies.distillation import DistillationLoss, hidden_pairs, student_blocks
from hft_search.training import fine_tune, initial_model
from hft_search.training.states import BlockStates, predict_outputs

pytest_plugins = ["engine_data"]
flat = HybridConfig.from_flat
FAST = {"training.epochs": 1, "training.batch_size": 16, "training.learning_rate": 5e-3}


def test_hidden_state_loss_matches_a_hand_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 2, 5, generator=generator), torch.randn(3, 2, 5, generator=generator)
    logits, labels = torch.randn(3, 2, generator=generator), torch.tensor([0, 1, UNLABELED])
    loss = DistillationLoss(alpha=0.0, beta=0.5, temperature=1.0, hidden_weight=100.0)
    expected_hidden = 0.0
    for row in range(3):
        for pair in range(2):
            s, t = student[row, pair].tolist(), teacher[row, pair].tolist()
            ns, nt = sum(x * x for x in s) ** 0.5, sum(x * x for x in t) ** 0.5
            expected_hidden += sum((a / ns - b / nt) ** 2 for a, b in zip(s, t, strict=True))
    expected_hidden /= 3 * 2 * 5  # PKD's F.mse_loss: the mean over rows, pairs and width
    # cross-entropy over the two labelled rows only (the third is a transfer-set row)
    log_probs = torch.log_softmax(logits, -1)
    expected_ce = -(log_probs[0, 0] + log_probs[1, 1]) / 2
    value = loss(logits, labels, None, (student, teacher))
    assert value.item() == pytest.approx(100.0 * expected_hidden + 0.5 * expected_ce.item(), rel=1e-5)
    assert loss(logits, torch.full((3,), UNLABELED), None, (student, teacher)).item() == pytest.approx(
        100.0 * expected_hidden, rel=1e-5)  # a batch of transfer rows only: no nan from an empty cross-entropy


def test_block_maps_are_pkd_skip_and_distilbert() -> None:
    # PKD's code: a 6-block student of a 12-block teacher learns teacher blocks "1,3,5,7,9" (0-based), top left out
    assert [t for _, t in hidden_pairs(6, 12)] == [1, 3, 5, 7, 9]
    assert hidden_pairs(3, 6) == [(0, 1), (1, 3)] and hidden_pairs(1, 6) == []
    # DistilBERT's extraction script: teacher blocks 0, 2, 4, 7, 9, 11 of 12
    assert student_blocks(12, 6, "alternate") == [0, 2, 4, 7, 9, 11]
    assert student_blocks(6, 3, "alternate") == [0, 2, 5] and student_blocks(6, 3, "bottom") == [0, 1, 2]
    assert student_blocks(4, 4, "alternate") == [0, 1, 2, 3]


def test_an_alternate_student_holds_the_teacher_blocks_it_names(tiny_base: BaseModel) -> None:
    config = flat({"distill.enabled": True, "distill.student_layers": 2, "distill.student_init": "alternate"})
    student, teacher = layers_of(initial_model(tiny_base, config, 0)), layers_of(tiny_base.template)
    assert student.num_layers == 2 and initial_model(tiny_base, config, 0).config.num_hidden_layers == 2
    for position, source in enumerate([0, 3]):  # round(i * 3 / 1): the bottom and the top block of 4
        got, want = student.blocks[position].state_dict(), teacher.blocks[source].state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    bottom = layers_of(initial_model(tiny_base, flat({"distill.enabled": True, "distill.student_layers": 2}), 0))
    assert torch.equal(bottom.blocks[1].output.dense.weight, teacher.blocks[1].output.dense.weight)


def test_block_states_are_the_pooled_block_outputs(tiny_base: BaseModel, tiny_valid: TokenizedSplit) -> None:
    model = tiny_base.fresh(0).eval()
    logits, states = predict_outputs(model, tiny_valid, device="cpu")
    assert states.shape == (len(tiny_valid), 4, 32) and states.dtype == torch.float16
    batch = {k: v for k, v in tiny_valid.batch(torch.arange(3)).items() if k != "labels"}
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states  # BERT: entry i+1 is block i's output
    assert torch.allclose(states[:3, 2].float(), hidden[3][:, 0], atol=1e-2)  # cls pooling of the tiny BERT
    assert torch.allclose(logits[:3], model(**batch).logits.detach(), atol=1e-5)
    hooks = BlockStates(model, [1])
    with torch.no_grad():
        model(**batch)  # mask unset: an evaluation pass is not collected
    assert hooks.states == {}
    hooks.close()


def test_hidden_state_distillation_trains_the_student_and_needs_the_states(tiny_base: BaseModel,
                                                                             tiny_train: TokenizedSplit) -> None:
    config = flat({**FAST, "distill.enabled": True, "distill.student_layers": 2, "distill.hidden_weight": 100.0})
    teacher = fine_tune(tiny_base, flat(FAST), tiny_train, None).model
    logits, states = predict_outputs(teacher, tiny_train, device="cpu")
    plain = fine_tune(tiny_base, config.model_copy(update={"distill": config.distill.model_copy(
        update={"hidden_weight": 0.0})}), tiny_train, None, teacher_logits=logits)
    pkd = fine_tune(tiny_base, config, tiny_train, None, teacher_logits=logits, teacher_states=states)
    block = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(dict(plain.model.named_parameters())[block], dict(pkd.model.named_parameters())[block])
    assert not [h for b in layers_of(pkd.model).blocks for h in b._forward_hooks.values()]  # hooks removed
    with pytest.raises(ValueError, match="teacher_states"):
        fine_tune(tiny_base, config, tiny_train, None, teacher_logits=logits)
    with pytest.raises(ValueError, match="distill.hidden_weight"):
        fine_tune(tiny_base, config, tiny_train, None, teacher_logits=logits, teacher_states=states[:, :, :16])
    with pytest.raises(SpecError, match="distill.hidden_weight"):
        TeacherOutputs(logits, None).needed(config)  # states over the cache bound were not kept


def _marked_spec(tmp_path: Path, tiny_model_dir: Path) -> tuple[dict, list[str]]:
    """A spec whose unlabeled file plants marker rows: a test row, labelled training rows, an empty text."""
    train_rows, test_rows = make_sentences(64, seed=11), make_sentences(20, seed=12)
    markers = [test_rows[0][0], train_rows[3][0], train_rows[40][0]]
    fresh = [text for text, _ in make_sentences(30, seed=13) if text not in {t for t, _ in train_rows + test_rows}]
    unlabeled = tmp_path / "unlabeled.csv"
    write_csv(unlabeled, [(text, "") for text in [*fresh[:10], *markers, " "]])
    raw = {"name": "transfer", "model": {"name": str(tiny_model_dir), "max_length": 16}, "cv": {"folds": 2},
           "data": {"train": str(write_csv(tmp_path / "train.csv", train_rows)),
                    "test": str(write_csv(tmp_path / "test.csv", test_rows)), "unlabeled": str(unlabeled)},
           "fixed": {**FAST, "distill.alpha": 0.8, "distill.student_layers": 2, "distill.teacher_epochs": 1,
                     "distill.hidden_weight": 50.0},
           "study": {"n_trials": 1, "storage": f"sqlite:///{tmp_path / 'hft.db'}", "pruner": "none"},
           "device": "cpu", "cache_dir": str(tmp_path / "cache")}
    return raw, markers


def test_the_transfer_set_never_holds_a_validation_or_test_row(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw, markers = _marked_spec(tmp_path, tiny_model_dir)
    spec = spec_from_dict(raw)
    data = load_data(spec.data)
    assert len(data.unlabeled) == 10 and not set(markers) & set(data.unlabeled.texts)
    assert (data.unlabeled.labels == UNLABELED).all()
    cv = CrossValidator(spec, cache=Cache(tmp_path / "cache"), data=data)
    config = flat({**spec.fixed, "distill.enabled": True})
    for fold, (train_idx, valid_idx) in enumerate(cv.folds):
        train = cv.tokens.subset(train_idx)
        rows = student_split(train, cv.transfer, config, cv.pad_id)
        transfer = rows.subset(np.arange(len(train), len(rows)))
        forbidden = {tuple(r[m.bool()].tolist()) for r, m in zip(cv.tokens.subset(valid_idx).input_ids,
                                                                  cv.tokens.subset(valid_idx).attention_mask,
                                                                  strict=True)}
        assert len(transfer) == 10 and (transfer.labels == UNLABELED).all()
        assert not {tuple(r[m.bool()].tolist()) for r, m in zip(transfer.input_ids, transfer.attention_mask,
                                                                strict=True)} & forbidden, fold
    result = cv.fit_fold(0, config)  # the fold's teacher labels its training rows and the transfer set
    entry = next((tmp_path / "cache" / "teacher_logits").rglob("*.pt"))
    assert entry.is_file() and result.teacher_score is not None and 0 <= result.score <= 1
    teacher, _ = cv._teacher(0, config, cv.tokens.subset(cv.folds[0][0]), cv.tokens.subset(cv.folds[0][1]),
                             student_split(cv.tokens.subset(cv.folds[0][0]), cv.transfer, config, cv.pad_id))
    assert teacher.logits.shape == (len(cv.folds[0][0]) + 10, 2) and teacher.states.shape[1:] == (4, 32)


def test_unlabeled_text_needs_distillation_and_its_errors_name_the_field(tmp_path: Path,
                                                                         tiny_model_dir: Path) -> None:
    raw, _ = _marked_spec(tmp_path, tiny_model_dir)
    raw["fixed"] = {**FAST}
    with pytest.raises(SpecError, match="data.unlabeled: only the distillation student"):
        spec_from_dict(raw)
    raw, _ = _marked_spec(tmp_path, tiny_model_dir)
    raw["data"]["unlabeled_column"] = "sentence"
    with pytest.raises(Exception, match="data.unlabeled_column: column 'sentence'"):
        load_data(spec_from_dict(raw).data)
