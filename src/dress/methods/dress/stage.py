"""DReSS regularization (and its FPR ablation): train all parameters while a group penalty of
:mod:`dress.methods.dress.penalty` acts on the chosen channels' groups, in one of two modes:

* ``proximal``: after every optimizer step a decoupled proximal shrink lowers each group by
  ``lam * lr_t / sum(lr over the first shrink_until of the steps)`` of its starting size, so with
  ``lam >= 1`` the groups are exactly zero by then and held there (the shrink goes on at the same
  rate; Adam pushes back by about ``lr`` per step, less than it): the cut is lossless and the rest of
  the stage trains what stays.
* ``penalty``: the paper's loss, ``LM + penalty_lam * R(W)`` with ``R`` the plain sum of group norms
  (ℓ2: ``sum_g ||g||_2``; ℓ1: ``sum |w|``); Adam trains against it and whatever mass is left is cut
  (reported as the preserved ratio and the prune gap; recovery repairs).

``method="dress"`` regularizes the groups of the channels to remove; ``method="fpr"`` regularizes
the groups of *every* channel with the same code and settings (the paper's Table 4 ablation). FPR
spreads the same total penalty over all channels: its ``lam`` is scaled by ``removed / all``
channels. Unscaled, ``lam >= 1`` would drive *every* channel to zero (``lam`` is relative to each
group's own size, see :mod:`dress.methods.dress.penalty`) and the ablation would only show that a zeroed model
is useless.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dress.methods.dress.config import RegularizeConfig
from dress.training.distill import Distillation
from dress.methods.dress.sharded import ProximalPenalty
from dress.methods.dress.penalty import channel_groups, group_scales, offsets_for, penalty, slice_mass
from dress.training.loop import TrainHistory, train
from dress.training.schedule import learning_rate


@dataclass
class RegularizationReport:
    """What a regularization run did: the training curves and how much of the removed groups survived."""

    preserved_ratio: float  # Σ|w| of the removed groups after ÷ before
    preserved_by_tensor: dict[str, float]  # Figure 3: per layer and matrix
    history: TrainHistory  # lm_loss, reg_loss (lam * R / R_0), distill_loss, lr
    seconds: float  # the whole call, setup included

    @property
    def lm_loss(self) -> list[float]:
        return self.history.lm_loss

    @property
    def reg_loss(self) -> list[float]:
        return self.history.reg_loss

    def as_dict(self) -> dict:
        curves = {k: v for k, v in self.history.as_dict().items() if k not in ("lr", "seconds")}
        return {"preserved_ratio": self.preserved_ratio, "preserved_by_tensor": self.preserved_by_tensor,
                **curves, "seconds": self.seconds}


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
    distill: Distillation | None = None,
) -> RegularizationReport:
    """Regularize ``regularized`` channels (default: ``removed``) on ``samples``; report how much
    of the ``removed`` groups' mass survived."""
    t0 = time.perf_counter()
    regularized = list(regularized) if regularized is not None else list(removed)
    penalized = channel_groups(model, regularized)
    watched = channel_groups(model, removed)
    penalized_offsets = offsets_for(model, penalized)
    scales = group_scales(penalized, penalized_offsets, config.norm)  # from the model as it is now (dense, also on resume)
    watched_offsets = offsets_for(model, watched)
    mass_before = slice_mass(watched, watched_offsets)

    settings = config.settings(config.steps, seed=seed, bf16=bf16, desc="regularize")
    spread = len(removed) / max(len(regularized), 1)  # FPR: the same total penalty, spread over all channels
    after_step = extra_loss = None
    if config.mode == "proximal":
        after_step = _proximal_hook(penalized, penalized_offsets, scales, config, settings, config.lam * spread)
    else:
        lam = config.penalty_lam * spread
        extra_loss = lambda: lam * penalty(penalized, config.norm, penalized_offsets, size_weighted=False)  # noqa: E731

    for p in model.parameters():
        p.requires_grad_(True)
    history = train(model, samples, settings, after_step, checkpoint_dir, resume, distill=distill,
                    extra_loss=extra_loss)
    mass_after = slice_mass(watched, watched_offsets)
    by_tensor = {name: mass_after[name] / max(mass_before[name], 1e-30) for name in mass_before}
    ratio = sum(mass_after.values()) / max(sum(mass_before.values()), 1e-30)
    return RegularizationReport(ratio, by_tensor, history, time.perf_counter() - t0)


def _proximal_hook(penalized, offsets, scales, config: RegularizeConfig, settings, lam: float) -> ProximalPenalty:
    """``proximal_step(penalized, norm, lam * lr_t / shrink_lr, ...)`` after every optimizer step, also
    on sharded weights (FSDP2, see :mod:`dress.methods.dress.sharded`), where ``shrink_lr``
    sums the learning rate over the first ``shrink_until`` of the steps. Logs ``lam * R / R_0``
    (``R`` before the shrink, ``R_0`` from the model before training, also on resume)."""
    shrink_steps = max(1, math.ceil(config.shrink_until * settings.steps))
    shrink_lr = sum(learning_rate(t, settings) for t in range(min(shrink_steps, settings.steps))) or 1.0
    with torch.no_grad():
        start_value = float(penalty(penalized, config.norm, offsets, scales)) or 1.0
    return ProximalPenalty(
        penalized, config.norm, offsets, scales,
        shrink=lambda _step, lr_t: lam * lr_t / shrink_lr,
        report=lambda value: lam * value / start_value,
    )
