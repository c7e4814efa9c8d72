"""The learning-rate schedule and the batch order every training stage shares (pure functions of
the settings and the step index, so a resumed run continues exactly where it stopped)."""

from __future__ import annotations

import math

import torch

from dress.training.config import TrainSettings


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Warm-up then cosine decay to 10% of the peak (``step`` counts from 0)."""
    if settings.warmup_steps and step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(settings.steps - settings.warmup_steps, 1)
    progress = min((step - settings.warmup_steps) / span, 1.0)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def total_learning_rate(settings: TrainSettings) -> float:
    """``sum_t lr_t`` over the whole schedule (1.0 for an empty one): the unit in which a decoupled
    shrink ``lam * lr_t / total`` removes ``lam`` times a quantity over the run."""
    return sum(learning_rate(t, settings) for t in range(settings.steps)) or 1.0


def batch_indices(step: int, micro: int, n_samples: int, settings: TrainSettings) -> torch.Tensor:
    """Sample indices of micro-batch ``micro`` of optimizer step ``step``: epochs of a seeded
    permutation, reshuffled per epoch, a pure function of (seed, step, micro)."""
    per_step = settings.batch_size * settings.grad_accum
    start = step * per_step + micro * settings.batch_size
    positions = torch.arange(start, start + settings.batch_size)
    out = torch.empty_like(positions)
    for i, pos in enumerate(positions.tolist()):
        epoch, offset = divmod(pos, n_samples)
        perm = torch.randperm(n_samples, generator=torch.Generator().manual_seed(settings.seed * 100003 + epoch))
        out[i] = perm[offset]
    return out
