"""The DReSS proximal penalty as a training hook, on replicated or sharded parameters.

:class:`ProximalPenalty` is what :func:`dress.training.loop.train` runs after every optimizer step:
:func:`dress.methods.dress.penalty.proximal_step` of the penalty ``R`` over ``slices`` (see
:mod:`dress.methods.dress.penalty` for ``R``, the groups, the per-group scales ``s_g`` and the units of
``lam``), with the shrink of this step and the logged value given by the caller (the schedule is
the method's business; this module only knows where the parameters live).

Where the parameters live decides how it runs:
  * replicated (one process, DDP): called as ``penalty(step, lr_t)`` it is ``proximal_step``
    itself, on every rank; the ranks hold identical weights and take identical steps, so they stay
    identical;
  * FSDP2 (parameters are ``DTensor``\\ s sharded along dim 0): :func:`dtensor_proximal_step`
    computes the same step on the local shards. A group that is a *row* (writer rows, norm and
    bias entries) lies whole on one rank and is shrunk there. A group that is a *column* (reader
    inputs, embedding columns) spans the ranks: each rank sums its part of every column's squares,
    one ``all_reduce`` per tensor gives the full norms, each rank scales its part. Communication is
    one vector of ``len(channels)`` per tensor, never a whole weight; the result equals the
    single-process step up to float summation order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from dress.pruning.shrink import soft_threshold
from dress.errors import DressError
from dress.methods.dress.penalty import GroupSlice, Scales, group_weights, proximal_step


@dataclass
class ProximalPenalty:
    """``after_step`` hook: ``report(proximal_step(slices, norm, shrink(step, lr_t), offsets, scales))``.

    ``shrink(step, lr_t)`` is this step's shrink (``proximal_step``'s third argument);
    ``report(R)`` turns ``R`` before the step into the logged regularization loss.
    """

    slices: Sequence[GroupSlice]
    norm: str
    offsets: Mapping[str, float]
    scales: Scales | None
    shrink: Callable[[int, float], float]
    report: Callable[[float], float]

    def __call__(self, step: int, lr_t: float) -> float:
        """Replicated parameters: exactly :func:`dress.methods.dress.penalty.proximal_step`."""
        value = proximal_step(self.slices, self.norm, self.shrink(step, lr_t), self.offsets, self.scales)
        return self.report(value)

    def on_dtensors(self, params: Mapping[str, torch.Tensor], step: int, lr_t: float) -> float:
        """FSDP2: the same step on ``params`` (name -> live parameter of the sharded model)."""
        shrink = self.shrink(step, lr_t)
        return self.report(dtensor_proximal_step(self.slices, params, self.norm, shrink, self.offsets, self.scales))


def _shard_layout(param) -> tuple[torch.Tensor, int, int, object]:
    """``(local rows, first global row, global rows, process group)`` of a DTensor sharded on dim 0
    along exactly one mesh dimension (FSDP2's layout; HSDP adds replicated mesh dimensions)."""
    placements = param.placements
    shard_dims = [i for i, p in enumerate(placements) if p.is_shard()]
    if len(shard_dims) != 1 or placements[shard_dims[0]].dim != 0:
        raise DressError(f"cannot apply the proximal step to a parameter laid out as {placements}; expected Shard(0)")
    mesh_dim = shard_dims[0]
    mesh = param.device_mesh
    world, coord = mesh.size(mesh_dim), mesh.get_local_rank(mesh_dim)
    local = param.to_local()
    rows = param.shape[0]
    chunk = -(-rows // world)  # torch.chunk semantics: the first ranks hold ceil(rows / world) rows
    start = min(coord * chunk, rows)
    if local.shape[0] != max(0, min(chunk, rows - start)):
        raise DressError(f"unexpected shard of {tuple(param.shape)}: {tuple(local.shape)} rows on rank {coord}")
    return local, start, rows, mesh.get_group(mesh_dim)


@torch.no_grad()
def dtensor_proximal_step(
    slices: Sequence[GroupSlice],
    params: Mapping[str, torch.Tensor],
    norm: str,
    shrink: float,
    offsets: Mapping[str, float] | None = None,
    scales: Scales | None = None,
) -> float:
    """:func:`dress.methods.dress.penalty.proximal_step` on dim-0-sharded DTensors, in place (module docstring).

    ``params`` maps each slice's name to the live parameter; plain tensors take the stock step.
    Collective: every rank calls it with the same slices in the same order (one ``all_reduce`` per
    sharded slice). Returns ``R`` before the step, the same number on every rank.
    """
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    before = 0.0
    for s in slices:
        param = params[s.name]
        offset = (offsets or {}).get(s.name, 0.0)
        if not isinstance(param, DTensor):
            stock = GroupSlice(s.name, param, s.dim, s.index.to(param.device))
            before += proximal_step([stock], norm, shrink, {s.name: offset}, scales)
            continue
        local, start, _rows, group = _shard_layout(param)
        group_size = param.numel() // param.shape[s.dim]
        index = s.index.to(local.device)
        weight = group_weights(scales, s.name, len(index), local.device).unsqueeze(1)  # [groups, 1]
        if s.dim == 1:  # columns: every rank holds a part of every group
            part = local.index_select(1, index).transpose(0, 1).reshape(len(index), -1)
        else:  # rows: a group lies whole on the rank that holds its row
            mine = (index >= start) & (index < start + local.shape[0])
            index, weight = index[mine] - start, weight[mine]
            part = local.index_select(0, index).reshape(len(index), -1)
        rows = (part - offset).float()  # [groups here, this rank's part of each group]
        threshold = shrink * weight
        if norm == "l2":
            if s.dim == 1:
                squares = rows.pow(2).sum(dim=1, keepdim=True)
                dist.all_reduce(squares, group=group)
                norms = squares.sqrt()
                before += float((weight * norms).sum()) * math.sqrt(group_size)
            else:
                norms = rows.norm(dim=1, keepdim=True)
                total = ((weight * norms).sum() * math.sqrt(group_size)).double()
                dist.all_reduce(total, group=group)
                before += float(total)
            rms = norms / math.sqrt(group_size)
            new = rows * torch.clamp(1.0 - threshold / rms.clamp_min(1e-30), min=0.0)
        else:
            total = (weight * rows.abs()).sum().double()
            dist.all_reduce(total, group=group)
            before += float(total)
            new = soft_threshold(rows, threshold)
        if shrink > 0 and len(index):
            new = (new + offset).to(local.dtype)
            if s.dim == 1:
                local.index_copy_(1, index, new.reshape(len(index), local.shape[0], *local.shape[2:]).transpose(0, 1))
            else:
                local.index_copy_(0, index, new.reshape(len(index), *local.shape[1:]))
    return before
