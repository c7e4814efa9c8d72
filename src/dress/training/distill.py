"""Distillation from the dense model: an optional loss for every training stage.

With ``distill.weight = w > 0`` each micro-batch's loss is ``(1 - w) * LM + w * KD``, where KD is the
mean over token positions of ``KL(p_teacher || p_student)`` at temperature ``T`` (times ``T**2``, so
its gradient's scale does not depend on ``T``). The teacher is a frozen copy of the dense model taken
before the method changes anything, so it is the same for every method of a comparison and costs one
extra forward pass per micro-batch.

Why it belongs to DReSS: regularization starts *at* the teacher (KD = 0) and the penalty pulls the
removed channels away from it; the KD gradient asks the kept channels to reproduce the dense model's
whole next-token distribution, not just the one sampled token -- exactly the "move the information
into the channels that stay" the method is after, with far more signal per calibration token.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T**2 * mean_positions KL(softmax(teacher / T) || softmax(student / T))`` in fp32.

    Logits are ``[..., vocab]``; every leading position counts once. Zero iff the two distributions
    agree at every position."""
    t = float(temperature)
    student = F.log_softmax(student_logits.float().flatten(0, -2) / t, dim=-1)
    teacher = F.log_softmax(teacher_logits.float().flatten(0, -2) / t, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * (t * t)


@dataclass
class Distillation:
    """What a training stage needs to distil: the frozen ``teacher`` and the loss's knobs."""

    teacher: nn.Module
    weight: float
    temperature: float = 1.0

    def loss(self, student_logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """KD term for one micro-batch whose student logits are ``student_logits``."""
        return distillation_loss(student_logits, teacher_logits(self.teacher, input_ids), self.temperature)


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with gradients off, in eval mode, on the same device."""
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def teacher_logits(teacher: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return teacher(input_ids=input_ids, use_cache=False).logits
