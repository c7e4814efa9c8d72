"""Norm corrections that make removing all-zero channels exact.

RMSNorm over ``d`` of a vector that is zero on the removed channels equals RMSNorm over the kept
``d'`` channels times ``sqrt(d'/d)`` (and its epsilon scaled by ``d'/d``). So a pruned RMSNorm is
exact after multiplying its gain by ``sqrt(d/d')`` and its epsilon by ``d/d'``.

LayerNorm also subtracts the mean over ``d``, which a stock LayerNorm over ``d'`` cannot
reproduce. :class:`WidthPreservingLayerNorm` computes mean and variance as if the removed
channels were present and zero; it is exact, and it is what OPT/Phi models pruned by dress use
(hence :func:`dress.load` for those families).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rms_gain_factor(full_width: int, kept_width: int) -> float:
    return math.sqrt(full_width / kept_width)


def correct_rms_norm(norm: nn.Module, full_width: int, kept_width: int, one_plus: bool) -> None:
    """Scale the gain of an already-sliced RMSNorm by ``sqrt(d/d')``.

    ``one_plus``: the Gemma form ``y = x_hat * (1 + w)``, where the effective gain is ``1 + w``.
    """
    factor = rms_gain_factor(full_width, kept_width)
    with torch.no_grad():
        if one_plus:
            norm.weight.copy_((1.0 + norm.weight) * factor - 1.0)
        else:
            norm.weight.mul_(factor)
    for attr in ("eps", "variance_epsilon"):
        if hasattr(norm, attr):
            setattr(norm, attr, getattr(norm, attr) * full_width / kept_width)


class WidthPreservingLayerNorm(nn.Module):
    """LayerNorm over ``kept_width`` inputs with the statistics of ``full_width`` inputs whose
    missing channels are zero.

    mean = sum(x) / D;  var = (sum((x - mean)^2) + (D - d') * mean^2) / D.
    Parameters are named ``weight``/``bias`` like ``nn.LayerNorm`` so state dicts keep their keys.
    """

    def __init__(self, kept_width: int, full_width: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.kept_width = kept_width
        self.full_width = full_width
        self.eps = eps
        self.normalized_shape = (kept_width,)
        self.weight = nn.Parameter(torch.ones(kept_width))
        self.bias = nn.Parameter(torch.zeros(kept_width)) if bias else None

    @classmethod
    def from_layernorm(cls, norm: nn.LayerNorm, full_width: int) -> "WidthPreservingLayerNorm":
        """Wrap an already-sliced LayerNorm (same parameters, same device/dtype)."""
        new = cls(norm.weight.shape[0], full_width, norm.eps, bias=norm.bias is not None)
        new.weight = norm.weight
        if norm.bias is not None:
            new.bias = norm.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        missing = self.full_width - self.kept_width
        mean = x.sum(-1, keepdim=True) / self.full_width
        centered = x - mean
        var = (centered.pow(2).sum(-1, keepdim=True) + missing * mean.pow(2)) / self.full_width
        y = centered * torch.rsqrt(var + self.eps)
        y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.kept_width}, full_width={self.full_width}, eps={self.eps}"
