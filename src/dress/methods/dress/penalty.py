"""The DReSS penalty: channel groups, their norms, and the proximal step that zeroes them.

Groups (docs/dress.md). For every channel ``c`` in the regularized set, one group per tensor slice that
touches ``c``: input column ``c`` of every reader (q/k/v, gate/up or fc1, lm_head), output row
``c`` of every writer (o_proj/down_proj, out_proj/fc2, dense) and its bias entry, embedding
column ``c`` (token and positional), norm weight/bias entry ``c``.

Penalty. Each group ``g`` carries a fixed weight ``s_g``, its RMS when regularization starts (for ℓ1:
its largest |w|, see :func:`group_scales`), and

  ℓ2:  R(W) = sum_g s_g * sqrt(n_g) * ||g||_2      (group lasso with the usual sqrt(group size)
                                                    weights, Yuan & Lin 2006)
  ℓ1:  R(W) = sum_g s_g * ||g||_1

The ``s_g`` make the penalty scale-free: a norm gain near 1.8 and a q_proj column of RMS 0.2 (both
measured on SmolLM2) are driven to zero *at the same pace*, so every removed group reaches zero at
the same step instead of the small ones first and the norms never.

Why a proximal step. With Adam every parameter moves about ``lr`` per step whatever the gradient's
size, so adding ``lam * R`` to the loss barely changes how fast the groups shrink (docs/dress.md, "The
problem the first feasibility run found": 55-75% of their mass left after 200 steps whatever lam was). We therefore optimise ``LM + mu * R`` by
*proximal gradient* with the penalty decoupled from Adam, as AdamW decouples weight decay: Adam
steps on the LM loss, then each group takes the exact proximal step of its penalty with step size
``mu * lr_t``:

  ℓ2:  g <- g * max(0, 1 - mu * lr_t * s_g / rms(g))     (the group's RMS falls by mu*lr_t*s_g)
  ℓ1:  w <- sign(w) * max(0, |w| - mu * lr_t * s_g)      (soft threshold: the proximal form of the
       paper's Proposition 3.2. Both solve min L + mu*||x||_1; Prop. 3.2 splits x = y+ - y- into a
       smooth problem with y± >= 0, and soft-thresholding is that problem's step in closed form,
       which gives exact zeros where a subgradient step would oscillate around them)

Units of ``lam``. We set ``mu = lam / sum_t lr_t`` (the sum over the whole learning-rate schedule),
so the shrink of one step is ``lam * lr_t / sum lr`` of each group's starting RMS and the penalty
alone removes ``lam`` times each group's starting size over the run. ``lam = 1`` reaches zero
exactly at the last step (if the data never pushed back); ``lam = 2`` about halfway, leaving the
rest of the budget to train the kept channels with the removed ones held at exactly zero. Adam can
push back by at most about ``lr`` per step, small next to ``lam * s_g / steps`` at the defaults.
The paper's ``λ = 1e-3`` multiplies an unnormalised loss term and is not comparable. The reported
regularization loss is ``lam * R / R_0`` (``R_0`` at the start): ``lam`` at the start, 0 once every
group is zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dress.pruning.shrink import soft_threshold
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


Scales = dict[str, torch.Tensor]  # tensor name -> [groups] weight s_g (see module docstring)


@torch.no_grad()
def group_scales(slices: Iterable[GroupSlice], offsets: dict[str, float] | None = None, norm: str = "l2") -> Scales:
    """``s_g`` of every group, measured once when regularization starts: its RMS for ``l2`` (the
    group shrinks as a whole), its largest ``|w|`` for ``l1`` (soft-thresholding zeroes an entry
    only once the accumulated threshold passes it, so the largest entry sets the pace)."""
    scales = {}
    for s in slices:
        rows = (s.view() - (offsets or {}).get(s.name, 0.0)).float()
        scales[s.name] = rows.pow(2).mean(dim=1).sqrt() if norm == "l2" else rows.abs().amax(dim=1)
    return scales


def group_weights(scales: Scales | None, name: str, groups: int, device) -> torch.Tensor:
    """``[groups]`` fp32 weights ``s_g`` of tensor ``name``'s groups (ones when unweighted)."""
    if scales is None:
        return torch.ones(groups, device=device)
    return scales[name].to(device, torch.float32)


def penalty(
    slices: Iterable[GroupSlice], norm: str, offsets: dict[str, float] | None = None, scales: Scales | None = None,
    size_weighted: bool = True,
) -> torch.Tensor:
    """``R(W)`` of the module docstring (differentiable: the penalty mode's loss term, and reporting).
    Without ``scales`` every ``s_g`` is 1; with ``size_weighted=False`` the ℓ2 groups lose their
    ``sqrt(n_g)`` weights, which leaves the paper's plain ``sum_g ||g||_2`` (its Eqs. 2-4)."""
    total = None
    for s in slices:
        rows = s.view() - (offsets or {}).get(s.name, 0.0)
        weight = group_weights(scales, s.name, rows.shape[0], rows.device)
        if norm == "l2":
            value = (weight * rows.norm(dim=1)).sum() * (math.sqrt(rows.shape[1]) if size_weighted else 1.0)
        else:
            value = (weight * rows.abs().sum(dim=1)).sum()
        total = value if total is None else total + value
    return total if total is not None else torch.zeros(())


@torch.no_grad()
def proximal_step(
    slices: Iterable[GroupSlice],
    norm: str,
    shrink: float,
    offsets: dict[str, float] | None = None,
    scales: Scales | None = None,
) -> float:
    """Exact proximal step of ``shrink * R`` on every group, in place (see module docstring):
    ℓ2 lowers each group's RMS by ``shrink * s_g``, ℓ1 soft-thresholds each entry by it.

    ``offsets[name]`` shifts the target of a tensor (Gemma norms shrink towards -1, not 0).
    Returns ``R`` *before* the step (reused for reporting, so the penalty is computed once).
    """
    before = 0.0
    for s in slices:
        offset = (offsets or {}).get(s.name, 0.0)
        # Work in the tensor's own layout (no transposed copies): picked is [out, k] for columns,
        # [k, ...] for rows; `along` broadcasts a per-group [k] vector over it.
        picked = s.param.index_select(s.dim, s.index).float()
        if offset:
            picked = picked - offset
        along = [1] * picked.dim()
        along[s.dim] = len(s.index)
        n_g = s.group_size
        weight = group_weights(scales, s.name, len(s.index), picked.device)
        if norm == "l2":
            other_dims = [d for d in range(picked.dim()) if d != s.dim]
            norms = picked.pow(2).sum(dim=other_dims).sqrt() if other_dims else picked.abs()  # [k]
            before += float((weight * norms).sum()) * math.sqrt(n_g)
            rms = norms / math.sqrt(n_g)
            factor = torch.clamp(1.0 - shrink * weight / rms.clamp_min(1e-30), min=0.0)
            new = picked * factor.view(along)
        else:
            threshold = (shrink * weight).view(along)
            before += float((weight.view(along) * picked.abs()).sum())
            new = soft_threshold(picked, threshold)
        if shrink > 0:
            s.param.index_copy_(s.dim, s.index, (new + offset if offset else new).to(s.param.dtype))
    return before


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
