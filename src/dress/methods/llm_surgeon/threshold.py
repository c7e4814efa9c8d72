"""One global threshold over the row and column costs of every matrix (LLM Surgeon's allocation).

Removing ``r`` rows and ``c`` columns of an ``R x C'`` matrix zeroes ``r C' + c R - r c`` entries.
:func:`global_threshold` finds the largest cost ``tau`` such that removing every structure with
cost ``<= tau``, in every matrix at once, zeroes at most ``budget`` entries. Structures already
dead (cost ``-inf``) are always removed. Ties are kept together, so the count never overshoots
the budget (except when the dead structures alone exceed it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MatrixCosts:
    """Costs of one matrix ``[R, C']``: ``rows`` ``[R]``, ``cols`` ``[C']`` (``-inf``: dead)."""

    rows: torch.Tensor
    cols: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.rows.numel()), int(self.cols.numel())


def removed_entries(n_rows: int, n_cols: int, r: int, c: int) -> int:
    """Entries zeroed by removing ``r`` of ``n_rows`` rows and ``c`` of ``n_cols`` columns."""
    return r * n_cols + c * n_rows - r * c


@dataclass
class Threshold:
    tau: float  # remove every structure with cost <= tau
    counted: int  # entries that removal zeroes, summed over matrices
    selections: list[tuple[torch.Tensor, torch.Tensor]]  # per matrix: (row indices, column indices)


def global_threshold(matrices: list[MatrixCosts], budget: int) -> Threshold:
    """The largest ``tau`` whose removals zero at most ``budget`` entries in all (see module doc)."""
    costs, owner, is_row = [], [], []
    for m, mc in enumerate(matrices):
        for values, row_flag in ((mc.rows, True), (mc.cols, False)):
            costs.append(values.double().flatten().cpu())
            owner.append(torch.full((values.numel(),), m, dtype=torch.long))
            is_row.append(torch.full((values.numel(),), row_flag, dtype=torch.bool))
    cost = torch.cat(costs)
    owner = torch.cat(owner)
    is_row = torch.cat(is_row)
    order = torch.sort(cost, stable=True).indices
    cost, owner, is_row = cost[order], owner[order], is_row[order]

    # r, c of each element's matrix right after it is taken (elements taken in cost order)
    n = cost.numel()
    by_owner = torch.sort(owner, stable=True).indices  # group by matrix, keeping cost order
    rows_sorted = is_row[by_owner].long()
    cols_sorted = 1 - rows_sorted
    owner_sorted = owner[by_owner]
    starts = torch.zeros(len(matrices) + 1, dtype=torch.long)
    starts[1:] = torch.bincount(owner_sorted, minlength=len(matrices)).cumsum(0)
    r_cum = rows_sorted.cumsum(0)
    c_cum = cols_sorted.cumsum(0)
    base_r = torch.cat([torch.zeros(1, dtype=torch.long), r_cum])[starts[owner_sorted]]
    base_c = torch.cat([torch.zeros(1, dtype=torch.long), c_cum])[starts[owner_sorted]]
    r_after = torch.empty(n, dtype=torch.long)
    c_after = torch.empty(n, dtype=torch.long)
    r_after[by_owner] = r_cum - base_r
    c_after[by_owner] = c_cum - base_c

    shapes = torch.tensor([mc.shape for mc in matrices], dtype=torch.long)  # [M, 2]
    n_rows, n_cols = shapes[owner, 0], shapes[owner, 1]
    r_before = r_after - is_row.long()
    c_before = c_after - (~is_row).long()
    after = r_after * n_cols + c_after * n_rows - r_after * c_after
    before = r_before * n_cols + c_before * n_rows - r_before * c_before
    total = (after - before).cumsum(0)  # entries zeroed once elements 0..k are taken

    group_end = torch.ones(n, dtype=torch.bool)
    group_end[:-1] = cost[1:] != cost[:-1]
    dead = torch.isneginf(cost)
    allowed = group_end & ((total <= budget) | dead)
    if bool(allowed.any()):
        k = int(torch.nonzero(allowed).max())
        tau, counted = float(cost[k]), int(total[k])
    else:
        tau, counted = float("-inf"), 0
    selections = [
        (torch.nonzero(mc.rows.double().cpu() <= tau).flatten(), torch.nonzero(mc.cols.double().cpu() <= tau).flatten())
        for mc in matrices
    ]
    return Threshold(tau, counted, selections)
