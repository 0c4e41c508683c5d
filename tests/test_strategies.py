"""Strategies: what each one freezes, masks, truncates or adapts, and that training honours it bit for bit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hft_search.data import TokenizedSplit
from hft_search.exceptions import SpecError
from hft_search.models import BaseModel, layers_of
from hft_search.spec import HybridConfig, ImportanceConfig
from hft_search.strategies import STRATEGIES, DistillationLoss, enabled_strategies, prepare, unwrap
from hft_search.strategies.importance import frozen_count, keep_elements, keep_tensors
from hft_search.training import compute_importance, fine_tune, predict_logits
from hft_search.training.optim import build_optimizer

pytest_plugins = ["engine_data"]
flat = HybridConfig.from_flat

HEAD = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}
TRAIN = {"training.epochs": 3, "training.batch_size": 16, "training.learning_rate": 1e-2,
         "training.warmup_ratio": 0.0}


def named(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in unwrap(model).named_parameters()}


def test_registry_order_and_selection() -> None:
    assert list(STRATEGIES) == ["distill", "freeze", "lora", "importance"]
    chosen = enabled_strategies(flat({"lora.enabled": True, "freeze.enabled": True}))
    assert [s.name for s in chosen] == ["freeze", "lora"]


# ------------------------------------------------------------------------------------------------ freeze


def test_frozen_blocks_and_embeddings_stay_bit_identical(tiny_base: BaseModel, tiny_train: TokenizedSplit,
                                                         tiny_valid: TokenizedSplit, device: str) -> None:
    knobs = flat({"freeze.enabled": True, "freeze.layers": 2, **TRAIN})
    result = fine_tune(tiny_base, knobs, tiny_train, tiny_valid, device=device)
    before, after = named(tiny_base.fresh(0)), named(result.model)
    frozen = [n for n in before
              if n.startswith(("bert.embeddings.", "bert.encoder.layer.0.", "bert.encoder.layer.1."))]
    trained = [n for n in before if n not in frozen]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in trained)
    assert result.trainable_params == sum(before[n].numel() for n in trained)


def test_frozen_parameters_stay_out_of_the_optimizer(tiny_base: BaseModel) -> None:
    setup = prepare(tiny_base.fresh(0), flat({"freeze.enabled": True, "freeze.layers": 3}))
    optimizer, _ = build_optimizer(setup.network, setup.masks, HybridConfig().training, torch.device("cpu"))
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, param in setup.network.named_parameters():
        expected = not name.startswith(("bert.embeddings.", *(f"bert.encoder.layer.{i}." for i in range(3))))
        assert param.requires_grad is expected and (id(param) in in_optimizer) is expected, name


# ------------------------------------------------------------------------------------------------ importance


@pytest.mark.parametrize("kind", ["grad_norm", "fisher", "grad_x_weight"])
def test_importance_scores_equal_direct_autograd(tiny_base: BaseModel, tiny_train: TokenizedSplit,
                                                  kind: str) -> None:
    model = tiny_base.fresh(0)
    scores = compute_importance(model, tiny_train, ImportanceConfig(score=kind, batches=3), batch_size=8,
                                device="cpu", seed=5)
    assert model.training  # the mode is given back

    reference = tiny_base.fresh(0).eval()
    params = dict(reference.named_parameters())
    generator = torch.Generator().manual_seed(5)
    batches = list(tiny_train.batches(8, shuffle=True, generator=generator))[:3]
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    for _, batch in batches:
        labels = batch.pop("labels")
        loss = F.cross_entropy(reference(**batch).logits, labels)
        grads = torch.autograd.grad(loss, list(params.values()))
        for (name, p), g in zip(params.items(), grads, strict=True):
            expected[name] += {"grad_norm": g.abs(), "fisher": g * g, "grad_x_weight": (g * p).abs()}[kind]
    assert scores.keys() == expected.keys()
    for name in scores:
        torch.testing.assert_close(scores[name], expected[name].detach() / 3, rtol=1e-6, atol=0)


def test_element_cut_freezes_exactly_floor_q_n_with_ties() -> None:
    scores = torch.tensor([0.5, 0.1, 0.3, 0.3, 0.3, 0.9, 0.0, 0.3])
    keep, cut = keep_elements(scores, drop=4)  # 0.0, 0.1 and the first two 0.3 (by position) are frozen
    assert keep.tolist() == [True, False, False, False, True, True, False, True] and cut == pytest.approx(0.3)
    keep, cut = keep_elements(scores, drop=0)
    assert keep.all() and cut == 0.0
    assert frozen_count(0.29, 100) == 29 and frozen_count(0.9, 37600) == 33840 and frozen_count(0.0, 7) == 0


def test_tensor_cut_freezes_whole_tensors_until_q_n_parameters() -> None:
    scores = torch.tensor([0.4, 0.1, 0.2, 0.9], dtype=torch.float64)
    sizes = torch.tensor([10, 30, 50, 10])
    keep, cut = keep_tensors(scores, sizes, drop=40)  # rank order 1 (30), 2 (50, straddles 40), 0, 3
    assert keep.tolist() == [True, False, False, True] and cut == pytest.approx(0.2)
    keep, _ = keep_tensors(scores, sizes, drop=30)  # exactly the lowest tensor
    assert keep.tolist() == [True, False, True, True]


@pytest.mark.parametrize("granularity", ["element", "tensor"])
def test_importance_cut_counts_and_the_head_is_always_kept(tiny_base: BaseModel, granularity: str) -> None:
    model = tiny_base.fresh(0)
    # The head gets the lowest scores of all: it must still train, whole and unmasked.
    generator = torch.Generator().manual_seed(0)
    scores = {name: torch.zeros_like(p) if name in HEAD else torch.rand(p.shape, generator=generator) + 1
              for name, p in model.named_parameters()}
    knobs = flat({"importance.enabled": True, "importance.threshold": 0.75,
                  "importance.granularity": granularity})
    setup = prepare(model, knobs, importance_scores=scores)
    params = dict(model.named_parameters())
    candidates = sum(p.numel() for n, p in params.items() if n not in HEAD)
    head = sum(params[n].numel() for n in HEAD)
    kept = setup.trainable_count() - head
    assert all(params[n].requires_grad and n not in setup.masks for n in HEAD)
    if granularity == "element":
        assert kept == candidates - math.floor(0.75 * candidates)
        everything = torch.cat([scores[n].flatten() for n in params if n not in HEAD])
        assert setup.importance_cut == everything.sort().values[math.floor(0.75 * candidates) - 1].item()
    else:
        assert not setup.masks and 0 < kept <= candidates - math.floor(0.75 * candidates)
        means = {n: scores[n].mean(dtype=torch.float64).item() for n in params if n not in HEAD}
        trained = {n for n in means if params[n].requires_grad}
        frozen = [means[n] for n in means if n not in trained]
        assert min(means[n] for n in trained) > setup.importance_cut == max(frozen)


def test_element_masked_entries_stay_bit_identical_under_weight_decay(
        tiny_base: BaseModel, tiny_train: TokenizedSplit, device: str) -> None:
    knobs = flat({"importance.enabled": True, "importance.threshold": 0.6,
                  "importance.granularity": "element", "training.weight_decay": 0.5, **TRAIN})
    scores = compute_importance(tiny_base.fresh(0), tiny_train, knobs.importance, batch_size=16, device="cpu")
    setup = prepare(tiny_base.fresh(0), knobs, importance_scores=scores)
    masks = setup.masks
    assert len(masks) > 5
    result = fine_tune(tiny_base, knobs, tiny_train, None, importance_scores=scores, device=device)
    before, after = named(tiny_base.fresh(0)), named(result.model)
    for name, keep in masks.items():
        assert torch.equal(before[name][~keep], after[name][~keep]), name
        changed = before[name][keep] != after[name][keep]
        if name.endswith(".weight") and "LayerNorm" not in name:  # decayed: every kept entry moves
            assert changed.all(), name
        assert changed.any(), name
    assert result.trainable_params == setup.trainable_count() < result.total_params


# ---------------------------------------------------------------------------------------------- distillation


def test_kd_loss_matches_a_hand_computation() -> None:
    student = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    teacher = torch.tensor([[1.0, 0.0, -1.0], [3.0, -2.0, 0.0]])
    labels = torch.tensor([0, 2])
    alpha, beta, t = 0.7, 0.4, 3.0
    kl = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        p_t = torch.softmax(t_row / t, 0)
        p_s = torch.softmax(s_row / t, 0)
        kl += float((p_t * (p_t.log() - p_s.log())).sum())
    ce = -(torch.log_softmax(student, 1)[0, 0] + torch.log_softmax(student, 1)[1, 2]).item() / 2
    expected = alpha * t * t * kl / 2 + beta * ce
    loss = DistillationLoss(alpha, beta, t)(student, labels, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    plain = DistillationLoss(0.0, 1.0, t)(student, labels, teacher)
    assert torch.equal(plain, F.cross_entropy(student, labels))


def test_no_gradient_reaches_the_teacher() -> None:
    student = torch.randn(4, 2, requires_grad=True)
    teacher = torch.randn(4, 2, requires_grad=True)
    DistillationLoss(0.5, 0.5, 2.0)(student, torch.tensor([0, 1, 1, 0]), teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_distillation_without_teacher_logits_says_how_to_get_them(tiny_base: BaseModel,
                                                                  tiny_train: TokenizedSplit) -> None:
    with pytest.raises(ValueError, match="teacher_logits=predict_logits"):
        fine_tune(tiny_base, flat({"distill.enabled": True}), tiny_train, None, device="cpu")
    with pytest.raises(ValueError, match=r"expected \(64, 2\)"):
        fine_tune(tiny_base, flat({"distill.enabled": True}), tiny_train, None, device="cpu",
                  teacher_logits=torch.zeros(10, 2))


def test_truncated_student_is_a_real_smaller_model(tiny_base: BaseModel, tiny_train: TokenizedSplit,
                                                   tiny_valid: TokenizedSplit, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    teacher = torch.randn(len(tiny_train), 2, generator=torch.Generator().manual_seed(0))
    knobs = flat({"distill.enabled": True, "distill.student_layers": 2, **TRAIN})
    result = fine_tune(tiny_base, knobs, tiny_train, tiny_valid, teacher_logits=teacher, device="cpu")
    student = result.model
    assert layers_of(student).num_layers == 2 and student.config.num_hidden_layers == 2
    assert result.total_params < sum(p.numel() for p in tiny_base.template.parameters())
    student.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    # Same weights; BLAS may pick another kernel path for differently aligned buffers (differences ~1e-9).
    torch.testing.assert_close(predict_logits(student, tiny_valid, device="cpu"),
                               predict_logits(again, tiny_valid, device="cpu"),
                               rtol=0, atol=1e-6)


def test_student_cannot_be_larger_than_the_model(tiny_base: BaseModel) -> None:
    with pytest.raises(SpecError, match="distill.student_layers: 9 exceeds the model's 4 blocks"):
        prepare(tiny_base.fresh(0), flat({"distill.enabled": True, "distill.student_layers": 9}))


# ------------------------------------------------------------------------------------------------ LoRA


def test_lora_trains_only_adapters_and_head(tiny_base: BaseModel, tiny_train: TokenizedSplit,
                                            device: str) -> None:
    knobs = flat({"lora.enabled": True, "lora.r": 4, **TRAIN})
    result = fine_tune(tiny_base, knobs, tiny_train, None, device=device)
    after = named(result.model)
    adapters = {n for n in after if ".lora_" in n}
    assert adapters and all(".attention.self." in n for n in adapters)
    before = named(tiny_base.fresh(0))
    for name, value in after.items():
        if name in adapters or name in HEAD:
            continue
        assert torch.equal(before[name.replace(".base_layer", "")], value), name
    head = sum(before[n].numel() for n in HEAD)
    assert result.trainable_params == sum(after[n].numel() for n in adapters) + head

    unmerged = predict_logits(result.model, tiny_train, device="cpu")  # fp32: merging is exact up to rounding
    merged = result.model.merge_and_unload()
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(predict_logits(merged, tiny_train, device="cpu"), unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.equal(merged.bert.encoder.layer[0].attention.self.query.weight,
                           before["bert.encoder.layer.0.attention.self.query.weight"])


def test_lora_with_freeze_adapts_only_the_frozen_blocks(tiny_base: BaseModel) -> None:
    knobs = flat({"freeze.enabled": True, "freeze.layers": 2, "lora.enabled": True,
                  "lora.targets": ["query", "output.dense"]})
    setup = prepare(tiny_base.fresh(0), knobs)
    trainable = set(setup.trainable_parameters())
    adapted = {n.split(".lora_")[0] for n in trainable if ".lora_" in n}
    assert adapted == {f"bert.encoder.layer.{i}.{m}" for i in (0, 1)
                       for m in ("attention.self.query", "attention.output.dense", "output.dense")}
    assert all(f"bert.encoder.layer.{i}.attention.self.key.weight" in trainable for i in (2, 3))  # in full
    assert not any(n.startswith("bert.embeddings.") for n in trainable)


def test_lora_rejects_targets_that_match_nothing(tiny_base: BaseModel) -> None:
    with pytest.raises(SpecError, match="lora.targets: 'q_proj' matches no module.*query"):
        prepare(tiny_base.fresh(0), flat({"lora.enabled": True, "lora.targets": ["q_proj"]}))


def test_all_strategies_combine(tiny_base: BaseModel, tiny_train: TokenizedSplit,
                                tiny_valid: TokenizedSplit) -> None:
    teacher = torch.randn(len(tiny_train), 2, generator=torch.Generator().manual_seed(1))
    knobs = flat({"distill.enabled": True, "distill.student_layers": 3, "freeze.enabled": True,
                  "freeze.layers": 1, "lora.enabled": True, "importance.enabled": True,
                  "importance.threshold": 0.5, "importance.granularity": "element", **TRAIN})
    result = fine_tune(tiny_base, knobs, tiny_train, tiny_valid, teacher_logits=teacher, device="cpu",
                       merge_lora=True)
    assert type(result.model).__name__ == "BertForSequenceClassification"  # LoRA merged away
    assert layers_of(result.model).num_layers == 3
    assert 0 < result.trainable_fraction < 1 and result.importance_cut is not None
    assert len(result.history) >= 1 and 0 <= result.score <= 1
