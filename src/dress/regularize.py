"""The DReSS penalty: channel groups, their norms, and the proximal step that zeroes them.

Groups (GUIDE §1). For every channel ``c`` in the regularized set, one group per tensor slice that
touches ``c``: input column ``c`` of every reader (q/k/v, gate/up or fc1, lm_head), output row
``c`` of every writer (o_proj/down_proj, out_proj/fc2, dense) and its bias entry, embedding
column ``c`` (token and positional), norm weight/bias entry ``c``.

Penalty. ``R(W) = sum_g sqrt(n_g) * ||g||_2`` for ``norm="l2"`` (the group lasso with the usual
sqrt(group size) weights, Yuan & Lin 2006, so an embedding column of 49k entries and a q column of
576 are shrunk at the same per-weight pace) and ``R(W) = sum |w|`` over the groups for ``norm="l1"``.

Why a proximal step, and the units of ``lam``. With Adam every parameter moves about ``lr`` per
step whatever the gradient's size, so adding ``lam * R`` to the loss barely changes how fast the
groups shrink (GUIDE §9: 55-75% of their mass left after 200 steps for any lam). We therefore
optimise ``LM + lam * R`` by *proximal gradient* with the penalty decoupled from Adam, as AdamW
decouples weight decay: Adam steps on the LM loss, then each group takes the exact proximal step
of its penalty with step size ``lam * lr_t`` (``lr_t`` the current learning rate):

  ℓ2:  g <- g * max(0, 1 - lam * lr_t * sqrt(n_g) / ||g||_2)     (RMS of g falls by lam*lr_t)
  ℓ1:  w <- sign(w) * max(0, |w| - lam * lr_t)                   (soft threshold; the proximal
       form of the paper's Proposition 3.2: both solve min L + lam*|x|_1, the split x = y+ - y-
       of Prop. 3.2 is what soft-thresholding computes in closed form)

So ``lam`` is dimensionless: the penalty moves each regularized weight ``lam`` times as far per
step as Adam can move it back. ``lam > 1`` wins against the data and reaches exact zeros within
``max|w| / (lam * sum_t lr_t)`` steps; the LM gradient meanwhile moves the groups' information into
the kept channels, which is the point of DReSS. The reported regularization loss is ``lam * R``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dress.adapters import adapter_for


@dataclass(frozen=True)
class GroupSlice:
    """All groups of one tensor: ``index`` along ``dim`` of ``param``, one group per index."""

    name: str  # e.g. "model.layers.3.self_attn.q_proj.weight"
    param: nn.Parameter
    dim: int  # 1: columns (readers, embeddings); 0: rows / vector entries
    index: torch.Tensor  # LongTensor of channels, on param's device

    def view(self) -> torch.Tensor:
        """``[len(index), n_g]``: one row per group (a copy)."""
        picked = self.param.index_select(self.dim, self.index)
        return picked.transpose(0, 1).reshape(len(self.index), -1) if self.dim == 1 else picked.reshape(len(self.index), -1)

    @property
    def group_size(self) -> int:
        return self.param.numel() // self.param.shape[self.dim]


def channel_groups(model: nn.Module, channels: Sequence[int]) -> list[GroupSlice]:
    """Every tensor slice touching ``channels`` (see module docstring); tied tensors appear once."""
    adapter = adapter_for(model)
    slices: list[GroupSlice] = []
    seen: set[int] = set()

    def add(name: str, param: torch.Tensor | None, dim: int) -> None:
        if param is None or id(param) in seen:
            return
        seen.add(id(param))
        index = torch.as_tensor(list(channels), dtype=torch.long, device=param.device)
        slices.append(GroupSlice(name, param, dim, index))

    for name, emb in adapter.named_embeddings(model):
        add(f"{name}.weight", emb.weight, 1)
    for name, reader in adapter.named_readers(model):
        add(f"{name}.weight", reader.weight, 1)
    for name, writer in adapter.named_writers(model):
        add(f"{name}.weight", writer.weight, 0)
        add(f"{name}.bias", writer.bias, 0)
    for name, norm in adapter.named_norms(model):
        add(f"{name}.weight", norm.weight, 0)
        add(f"{name}.bias", getattr(norm, "bias", None), 0)
    return slices


def norm_offset(model: nn.Module) -> float:
    """Value of a norm weight that means "gain 0": Gemma's ``(1 + w)`` form needs ``w = -1``."""
    return -1.0 if adapter_for(model).norm_kind == "rms_one_plus" else 0.0


def penalty(slices: Iterable[GroupSlice], norm: str, offsets: dict[str, float] | None = None) -> torch.Tensor:
    """``R(W)`` of the module docstring (differentiable; used for reporting and tests)."""
    total = None
    for s in slices:
        rows = s.view() - (offsets or {}).get(s.name, 0.0)
        if norm == "l2":
            value = rows.norm(dim=1).sum() * math.sqrt(rows.shape[1])
        else:
            value = rows.abs().sum()
        total = value if total is None else total + value
    return total if total is not None else torch.zeros(())


@torch.no_grad()
def proximal_step(slices: Iterable[GroupSlice], norm: str, threshold: float, offsets: dict[str, float] | None = None) -> float:
    """Exact proximal step of ``threshold * R`` on every group, in place (see module docstring).

    ``offsets[name]`` shifts the target of a tensor (Gemma norms shrink towards -1, not 0).
    Returns ``R`` *before* the step (reused for reporting, so the penalty is computed once).
    """
    before = 0.0
    for s in slices:
        offset = (offsets or {}).get(s.name, 0.0)
        rows = (s.view() - offset).float()  # [groups, n_g]
        if norm == "l2":
            norms = rows.norm(dim=1, keepdim=True)
            before += float(norms.sum()) * math.sqrt(rows.shape[1])
            rms = norms / math.sqrt(rows.shape[1])
            new = rows * torch.clamp(1.0 - threshold / rms.clamp_min(1e-30), min=0.0)
        else:
            before += float(rows.abs().sum())
            new = rows.sign() * torch.clamp(rows.abs() - threshold, min=0.0)
        if threshold > 0:
            _write_rows(s, new + offset)
    return before


def _write_rows(s: GroupSlice, rows: torch.Tensor) -> None:
    if s.dim == 1:
        shape = (s.param.shape[0], len(s.index))
        s.param.index_copy_(1, s.index, rows.reshape(len(s.index), -1).transpose(0, 1).reshape(shape).to(s.param.dtype))
    else:
        shape = (len(s.index),) + tuple(s.param.shape[1:])
        s.param.index_copy_(0, s.index, rows.reshape(shape).to(s.param.dtype))


@torch.no_grad()
def slice_mass(slices: Iterable[GroupSlice], offsets: dict[str, float] | None = None) -> dict[str, float]:
    """Σ|w| of each tensor's regularized slice (the paper's Figure 3 statistic, before ÷ after)."""
    return {s.name: float((s.view() - (offsets or {}).get(s.name, 0.0)).abs().sum()) for s in slices}


def offsets_for(model: nn.Module, slices: Iterable[GroupSlice]) -> dict[str, float]:
    """Per-tensor zero point: Gemma norm weights shrink to -1 (gain 1 + w = 0)."""
    offset = norm_offset(model)
    if offset == 0.0:
        return {}
    adapter = adapter_for(model)
    norm_names = {f"{name}.weight" for name, _ in adapter.named_norms(model)}
    return {s.name: offset for s in slices if s.name in norm_names}
