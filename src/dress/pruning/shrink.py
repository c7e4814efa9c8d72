"""Proximal shrinks shared by every regularized method (pure tensor functions)."""

from __future__ import annotations

import torch


def soft_threshold(x: torch.Tensor, amount: torch.Tensor | float) -> torch.Tensor:
    """``sign(x) * max(0, |x| - amount)``: the exact proximal step of ``amount * |x|`` (l1).
    Entries whose magnitude is at most ``amount`` become exactly zero."""
    return x.sign() * torch.clamp(x.abs() - amount, min=0.0)
