"""The training loop: optimizer groups, schedule, early stopping, failures, metrics and reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from hft_search.data import TokenizedSplit
from hft_search.exceptions import SpecError, TrialFailure
from hft_search.models import BaseModel
from hft_search.spec import HybridConfig, TrainingConfig
from hft_search.training import (
    compute_importance,
    compute_metric,
    fine_tune,
    initial_model,
    predict_logits,
    resolve_device,
    teacher_config,
)
from hft_search.training.importance import importance_batches
from hft_search.training.loop import EarlyStopping, set_dropout
from hft_search.training.optim import build_optimizer, linear_schedule, no_decay_names

pytest_plugins = ["engine_data"]
flat = HybridConfig.from_flat
FAST = {"training.batch_size": 16, "training.learning_rate": 1e-2, "training.warmup_ratio": 0.0}


def test_biases_and_layernorm_get_no_decay_and_adamw_is_fused(tiny_base: BaseModel) -> None:
    model = tiny_base.fresh(0)
    names = no_decay_names(model)
    assert "bert.embeddings.LayerNorm.weight" in names and "classifier.bias" in names
    assert "bert.encoder.layer.0.output.LayerNorm.weight" in names
    assert not names & {"classifier.weight", "bert.encoder.layer.0.attention.self.query.weight"}
    optimizer, masks = build_optimizer(model, {}, TrainingConfig(weight_decay=0.3), torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.3 and plain["weight_decay"] == 0.0
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert {by_id[id(p)] for p in plain["params"]} == names
    assert optimizer.defaults["fused"] and not masks.params


def test_linear_warmup_steps_are_the_ceiling_of_the_ratio() -> None:
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    schedule = linear_schedule(optimizer, total_steps=10, warmup_ratio=0.25)  # ceil(2.5) = 3 warm-up steps
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx([0, 1 / 3, 2 / 3, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7])


def test_dropout_override_reaches_attention_dropout(tiny_base: BaseModel) -> None:
    model = tiny_base.fresh(0)
    set_dropout(model, 0.37)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) > 8 and all(m.p == 0.37 for m in dropouts)
    assert model.bert.encoder.layer[0].attention.self.dropout.p == 0.37  # read by the attention kernel


def test_early_stopping_keeps_the_best_epoch() -> None:
    weight = nn.Parameter(torch.zeros(3))
    stopper = EarlyStopping(patience=2)
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.7], start=1):
        with torch.no_grad():
            weight.fill_(epoch)
        improved = stopper.update(epoch, score, {"w": weight})
        assert improved is (epoch in (1, 2))
        assert stopper.should_stop is (epoch == 4)  # a tie is no improvement
    stopper.restore({"w": weight})
    assert stopper.best_epoch == 2 and torch.equal(weight, torch.full((3,), 2.0))
    assert not EarlyStopping(1).update(1, math.nan, {"w": weight})


def test_fine_tune_stops_early_and_restores_the_best_weights(tiny_base: BaseModel, tiny_train: TokenizedSplit,
                                                             device: str) -> None:
    # Validation = the training rows with flipped labels: the better the fit, the worse the score.
    flipped = TokenizedSplit(tiny_train.input_ids, tiny_train.attention_mask, 1 - tiny_train.labels,
                             tiny_train.token_type_ids)
    knobs = flat({**FAST, "training.epochs": 12, "training.patience": 2})
    result = fine_tune(tiny_base, knobs, tiny_train, flipped, device=device)
    scores = [row["valid_score"] for row in result.history]
    assert result.stopped_early and len(result.history) == result.best_epoch + 2 < 12
    assert result.score == max(scores) == scores[result.best_epoch - 1]
    probs = predict_logits(result.model, flipped, device=device).softmax(-1)
    torch.testing.assert_close(probs, result.valid_probs, rtol=1e-5, atol=1e-6)  # the best epoch's weights
    assert compute_metric("accuracy", flipped.labels, probs) == result.score
    assert not result.model.training and next(result.model.parameters()).device.type == "cpu"
    assert [row["epoch"] for row in result.history] == list(range(1, len(scores) + 1))


def test_without_validation_every_epoch_runs_and_the_score_is_nan(tiny_base: BaseModel,
                                                                  tiny_train: TokenizedSplit) -> None:
    result = fine_tune(tiny_base, flat({**FAST, "training.epochs": 3}), tiny_train, None, device="cpu")
    assert math.isnan(result.score) and result.valid_probs is None and not result.stopped_early
    assert len(result.history) == 3 and result.best_epoch == 3
    assert all(math.isnan(row["valid_score"]) and row["train_loss"] > 0 for row in result.history)
    assert result.trainable_fraction == 1.0 and result.importance_cut is None
    assert result.peak_memory_mb > 0 and result.train_time_s > 0
    assert result.optimizer_state_bytes >= 2 * 4 * result.trainable_params


def test_same_seed_same_run_and_the_callers_random_state_is_kept(
        tiny_base: BaseModel, tiny_train: TokenizedSplit, tiny_valid: TokenizedSplit) -> None:
    knobs = flat({**FAST, "training.epochs": 2, "training.dropout": 0.2})
    torch.manual_seed(123)
    a = fine_tune(tiny_base, knobs, tiny_train, tiny_valid, seed=3, device="cpu")
    after = torch.rand(1)
    torch.manual_seed(123)
    b = fine_tune(tiny_base, knobs, tiny_train, tiny_valid, seed=3, device="cpu")
    assert torch.equal(after, torch.rand(1))
    c = fine_tune(tiny_base, knobs, tiny_train, tiny_valid, seed=4, device="cpu")
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert torch.equal(a.valid_probs, b.valid_probs) and not torch.equal(a.valid_probs, c.valid_probs)


def test_importance_scores_given_or_computed_give_the_same_run(
        tiny_base: BaseModel, tiny_train: TokenizedSplit, tiny_valid: TokenizedSplit) -> None:
    knobs = flat({**FAST, "training.epochs": 1, "importance.enabled": True, "importance.threshold": 0.8})
    scores = compute_importance(tiny_base.fresh(2), tiny_train, knobs.importance, batch_size=16, device="cpu",
                                seed=2)
    given = fine_tune(tiny_base, knobs, tiny_train, tiny_valid, seed=2, device="cpu",
                      importance_scores=scores)
    computed = fine_tune(tiny_base, knobs, tiny_train, tiny_valid, seed=2, device="cpu")
    assert given.importance_cut == computed.importance_cut
    assert given.trainable_params == computed.trainable_params
    assert torch.equal(given.valid_probs, computed.valid_probs)


def test_nan_loss_fails_the_trial_naming_epoch_and_step(tiny_base: BaseModel,
                                                        tiny_train: TokenizedSplit) -> None:
    teacher = torch.zeros(len(tiny_train), 2)
    teacher[37, 0] = math.nan
    order = torch.randperm(len(tiny_train), generator=torch.Generator().manual_seed(0))  # the epoch-1 shuffle
    step = int((order == 37).nonzero()) // 16 + 1
    knobs = flat({**FAST, "distill.enabled": True})
    with pytest.raises(TrialFailure, match=f"loss became nan at epoch 1 step {step}$"):
        fine_tune(tiny_base, knobs, tiny_train, None, device="cpu", teacher_logits=teacher)


def test_teacher_config_is_the_plain_full_model_with_its_own_knobs() -> None:
    knobs = flat({"distill.enabled": True, "distill.student_layers": 2, "distill.teacher_epochs": 5,
                  "distill.teacher_batch_size": 8, "freeze.enabled": True, "lora.enabled": True,
                  "training.learning_rate": 3e-4, "training.batch_size": 4, "training.epochs": 1})
    teacher = teacher_config(knobs)
    assert not any(getattr(teacher, group).enabled for group in ("distill", "freeze", "lora", "importance"))
    # the student's training.* values never shape the teacher: only the distill.teacher_* knobs do
    assert teacher.training.epochs == 5 and teacher.training.batch_size == 8
    assert teacher.training.learning_rate == 5e-5


def test_importance_is_scored_on_the_truncated_student(tiny_base: BaseModel, tiny_train: TokenizedSplit) -> None:
    from hft_search.spec import ImportanceConfig

    student = flat({**FAST, "distill.enabled": True, "distill.student_layers": 1, "importance.enabled": True})
    full = flat({**FAST, "importance.enabled": True})
    settings = ImportanceConfig(enabled=True)
    on_student = compute_importance(initial_model(tiny_base, student, 3), tiny_train, settings, batch_size=8,
                                    device="cpu", seed=3)
    on_full = compute_importance(initial_model(tiny_base, full, 3), tiny_train, settings, batch_size=8,
                                 device="cpu", seed=3)
    assert tiny_base.num_layers > 1
    assert not any(".layer.1." in name for name in on_student)  # only the kept block (and the rest) is scored
    shared = [name for name in on_student if name in on_full]
    assert shared and any(not torch.equal(on_student[n], on_full[n]) for n in shared)
    # what the student's own gradients give: |dL/dθ| averaged over the same batches
    model = initial_model(tiny_base, student, 3).eval()
    batches = list(importance_batches(tiny_train, 8, settings.batches, 3))
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for _, batch in batches:
        labels = batch.pop("labels")
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        names = [name for name, _ in model.named_parameters()]
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        for name, grad in zip(names, grads, strict=True):
            if grad is not None:
                expected[name] += grad.abs()
    for name, value in on_student.items():
        torch.testing.assert_close(value, expected[name] / len(batches))


def test_distillation_with_alpha_zero_needs_no_teacher(tiny_base: BaseModel,
                                                       tiny_train: TokenizedSplit) -> None:
    knobs = flat({**FAST, "training.epochs": 1, "distill.enabled": True, "distill.alpha": 0.0,
                  "distill.student_layers": 1})
    result = fine_tune(tiny_base, knobs, tiny_train, None, device="cpu")
    assert result.model.config.num_hidden_layers == 1


def test_predict_logits_leaves_the_model_as_it_was(tiny_base: BaseModel, tiny_valid: TokenizedSplit) -> None:
    model = tiny_base.fresh(0)
    logits = predict_logits(model, tiny_valid, batch_size=7, device="cpu")
    assert logits.shape == (len(tiny_valid), 2) and logits.dtype == torch.float32 and model.training
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=tiny_valid.input_ids, attention_mask=tiny_valid.attention_mask,
                         token_type_ids=tiny_valid.token_type_ids).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


def test_metrics_agree_with_scikit_learn() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9], [0.8, 0.2]])
    predicted = probs.argmax(1)
    assert compute_metric("accuracy", labels, probs) == pytest.approx(4 / 6)
    assert compute_metric("f1", torch.tensor(labels), torch.tensor(probs)) == pytest.approx(
        skm.f1_score(labels, predicted))
    assert compute_metric("f1_macro", labels, probs) == pytest.approx(
        skm.f1_score(labels, predicted, average="macro"))
    assert compute_metric("mcc", labels, probs) == pytest.approx(skm.matthews_corrcoef(labels, predicted))
    assert compute_metric("roc_auc", labels, probs) == pytest.approx(skm.roc_auc_score(labels, probs[:, 1]))
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    assert compute_metric("f1", [0, 1, 2, 1], three) == pytest.approx(
        skm.f1_score([0, 1, 2, 1], [0, 1, 2, 0], average="macro"))
    assert compute_metric("roc_auc", [0, 1, 2, 1], three) == pytest.approx(
        skm.roc_auc_score([0, 1, 2, 1], three, multi_class="ovr"))
    assert math.isnan(compute_metric("roc_auc", [1, 1], probs[:2]))
    with pytest.raises(SpecError, match="cv.metric: unknown metric 'auc'; use one of accuracy"):
        compute_metric("auc", labels, probs)


def test_devices_resolve_or_say_what_to_use() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(SpecError, match="device: 'tpu9' is not a device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="device: cuda was asked for"):
            resolve_device("cuda")
