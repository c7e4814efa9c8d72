"""DReSS regularization (and its FPR ablation): train all parameters while the proximal group
penalty of :mod:`dress.regularize` drives the chosen channels' groups to zero.

``method="dress"`` regularizes the groups of the channels to remove; ``method="fpr"`` regularizes
the groups of *every* channel with the same code and settings (the paper's Table 4 ablation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dress.config import RegularizeConfig
from dress.regularize import channel_groups, offsets_for, proximal_step, slice_mass
from dress.training import TrainSettings, train


@dataclass
class RegularizationReport:
    preserved_ratio: float  # Σ|w| of the removed groups after ÷ before
    preserved_by_tensor: dict[str, float]  # Figure 3: per layer and matrix
    lm_loss: list[float]
    reg_loss: list[float]
    seconds: float

    def as_dict(self) -> dict:
        return {
            "preserved_ratio": self.preserved_ratio,
            "preserved_by_tensor": self.preserved_by_tensor,
            "lm_loss": self.lm_loss,
            "reg_loss": self.reg_loss,
            "seconds": self.seconds,
        }


def regularize(
    model: nn.Module,
    removed: Sequence[int],
    samples: torch.Tensor,
    config: RegularizeConfig,
    *,
    regularized: Sequence[int] | None = None,
    seed: int = 0,
    bf16: bool = False,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> RegularizationReport:
    """Regularize ``regularized`` channels (default: ``removed``) on ``samples``; report how much
    of the ``removed`` groups' mass survived."""
    t0 = time.perf_counter()
    penalized = channel_groups(model, regularized if regularized is not None else removed)
    watched = channel_groups(model, removed)
    penalized_offsets = offsets_for(model, penalized)
    watched_offsets = offsets_for(model, watched)
    mass_before = slice_mass(watched, watched_offsets)

    def after_step(_step: int, lr_t: float) -> float:
        return config.lam * proximal_step(penalized, config.norm, config.lam * lr_t, penalized_offsets)

    for p in model.parameters():
        p.requires_grad_(True)
    settings = TrainSettings(
        steps=config.steps,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=seed,
        bf16=bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        checkpoint_every=config.checkpoint_every,
        desc="regularize",
    )
    history = train(model, samples, settings, after_step, checkpoint_dir, resume)
    mass_after = slice_mass(watched, watched_offsets)
    by_tensor = {name: mass_after[name] / max(mass_before[name], 1e-30) for name in mass_before}
    ratio = sum(mass_after.values()) / max(sum(mass_before.values()), 1e-30)
    return RegularizationReport(ratio, by_tensor, history.lm_loss, history.reg_loss, time.perf_counter() - t0)
