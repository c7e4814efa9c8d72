"""Pure, in-place slicing of single modules along the hidden (residual) dimension.

Each function keeps the given indices (a sorted ``LongTensor``) of one axis, replaces the
parameter with a new contiguous ``nn.Parameter`` of the same dtype/device/requires_grad, and
updates the module's size attributes so ``repr`` and re-creation from them stay truthful.
"""

from __future__ import annotations

import torch
from torch import nn


def _replace(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


def slice_linear_in(linear: nn.Linear, keep: torch.Tensor) -> None:
    """Keep input columns ``keep``: weight ``[out, in] -> [out, len(keep)]``; bias untouched."""
    _replace(linear, "weight", linear.weight.data.index_select(1, keep.to(linear.weight.device)))
    linear.in_features = len(keep)


def slice_linear_out(linear: nn.Linear, keep: torch.Tensor) -> None:
    """Keep output rows ``keep``: weight ``[out, in] -> [len(keep), in]``, bias ``[out] -> [len(keep)]``."""
    keep = keep.to(linear.weight.device)
    _replace(linear, "weight", linear.weight.data.index_select(0, keep))
    if linear.bias is not None:
        _replace(linear, "bias", linear.bias.data.index_select(0, keep))
    linear.out_features = len(keep)


def slice_embedding(embedding: nn.Embedding, keep: torch.Tensor) -> None:
    """Keep embedding columns ``keep``: weight ``[vocab, d] -> [vocab, len(keep)]``."""
    _replace(embedding, "weight", embedding.weight.data.index_select(1, keep.to(embedding.weight.device)))
    embedding.embedding_dim = len(keep)


def slice_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    """Keep entries ``keep`` of a norm's weight (and bias, if it has one)."""
    keep = keep.to(norm.weight.device)
    _replace(norm, "weight", norm.weight.data.index_select(0, keep))
    if isinstance(getattr(norm, "bias", None), torch.Tensor):
        _replace(norm, "bias", norm.bias.data.index_select(0, keep))
    if hasattr(norm, "normalized_shape"):
        norm.normalized_shape = (len(keep),)
    if hasattr(norm, "dim"):  # Gemma3RMSNorm stores its width
        norm.dim = len(keep)
