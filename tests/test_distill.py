"""Distillation from the dense model: the KD term by hand, its fixed point, and its effect in training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dress.training.distill import Distillation, distillation_loss, frozen_teacher
from dress.training.loop import TrainSettings, train
from tiny_models import sample_ids, tiny_model


def test_distillation_loss_equals_a_hand_computed_kl():
    student = torch.tensor([[[0.0, 1.0, 2.0]], [[1.0, 0.0, 0.0]]])
    teacher = torch.tensor([[[2.0, 1.0, 0.0]], [[0.0, 0.0, 0.0]]])
    expected = 0.0
    for s_row, t_row in zip(student.reshape(-1, 3), teacher.reshape(-1, 3)):
        p = torch.softmax(t_row, -1)
        expected += float((p * (p.log() - torch.log_softmax(s_row, -1))).sum())
    assert math.isclose(float(distillation_loss(student, teacher)), expected / 2, rel_tol=1e-6)
    # temperature T: KL between the softened distributions, times T^2
    t = 2.0
    soft = distillation_loss(student / t, teacher / t) * t * t
    assert math.isclose(float(distillation_loss(student, teacher, temperature=t)), float(soft), rel_tol=1e-6)


def test_distillation_loss_is_zero_only_at_the_teacher():
    logits = torch.randn(2, 5, 11)
    assert float(distillation_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits + torch.randn_like(logits), logits)) > 1e-3


def test_the_teacher_is_a_fixed_point_of_pure_distillation():
    """At the teacher the KD term is 0 and so is its gradient (regularization starts there)."""
    model = tiny_model("llama")
    distill = Distillation(frozen_teacher(model), weight=1.0)
    assert not any(p.requires_grad for p in distill.teacher.parameters())
    ids = sample_ids(2, 16, seed=3)
    for p in model.parameters():
        p.requires_grad_(True)
    kd = distill.loss(model(input_ids=ids).logits, ids)
    kd.backward()
    assert kd.detach().item() == pytest.approx(0.0, abs=1e-6)
    assert max(float(p.grad.abs().max()) for p in model.parameters()) < 1e-6


def test_distillation_pulls_a_perturbed_student_back_to_the_teacher():
    teacher = tiny_model("llama")
    with torch.no_grad():
        teacher.lm_head.weight.mul_(20.0)  # confident predictions, so a wrong student is far from it
    student = frozen_teacher(teacher)
    teacher = frozen_teacher(teacher)
    with torch.no_grad():
        student.model.norm.weight.mul_(0.3)  # a damaged copy of the teacher
    student.model.norm.weight.requires_grad_(True)  # the only trainable tensor
    ids = sample_ids(4, 16, seed=5)
    history = train(student, ids, TrainSettings(steps=20, lr=3e-2), distill=Distillation(teacher, weight=1.0))
    assert history.distill_loss[0] > 0.05
    assert history.distill_loss[-1] < 0.25 * history.distill_loss[0]


def test_weight_zero_is_the_plain_lm_loss():
    ids = sample_ids(4, 16, seed=2)
    plain, with_zero = tiny_model("llama"), tiny_model("llama")
    train(plain, ids, TrainSettings(steps=2, lr=1e-3))
    history = train(with_zero, ids, TrainSettings(steps=2, lr=1e-3),
                    distill=Distillation(frozen_teacher(with_zero), weight=0.0))
    assert history.distill_loss == []
    for (k, a), b in zip(plain.state_dict().items(), with_zero.state_dict().values()):
        assert torch.equal(a, b), k


def test_cli_distils_in_every_training_stage(tmp_path):
    from dress.cli import main
    from tiny_models import save_tiny, write_corpus

    model_dir, corpus = save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "out"
    assert main(["prune", str(model_dir), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
                 "--samples", "8", "--seq-len", "32", "--steps", "3", "--rft-steps", "2", "--eval-seq-len", "32",
                 "--eval-tokens", "256", "--device", "cpu", "--method", "dress", "--distill", "0.5"]) == 0
    record = json.loads((out / "dress.json").read_text())
    assert record["config"]["distill"] == {"weight": 0.5, "temperature": 1.0}
    report = record["report"]
    assert len(report["regularization"]["distill_loss"]) == 3
    assert report["regularization"]["distill_loss"][0] < 1e-4  # regularization starts at the teacher
    assert len(report["recovery"]["distill_loss"]) == 2 and report["recovery"]["distill_loss"][0] > 0
