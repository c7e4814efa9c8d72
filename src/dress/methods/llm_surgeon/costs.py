"""LLM Surgeon's OBS costs and weight updates for one matrix under a Kronecker curvature.

Pure tensor functions (no model, no hooks). Notation, for one ``nn.Linear`` with weight ``W``
``[R, C]`` (a bias, if any, is appended as the last column, ``W~ = [W | b]`` ``[R, C']``):

* ``A`` ``[C', C']``: second moment of the layer's inputs (a constant 1 appended for the bias);
* ``G`` ``[R, R]``: second moment of the loss gradient w.r.t. the layer's outputs;
* the curvature of the loss in ``W~`` is ``F = G (x) A`` (K-FAC): ``vec(dW)^T F vec(dW) =
  tr(dW^T G dW A)``.

Removing row ``r`` (output ``r``; all of ``W~[r, :]``) at least cost, letting every other row
compensate, costs ``0.5 (W A W^T)_rr / (G^-1)_rr``; removing column ``c`` costs
``0.5 (W^T G W)_cc / (A^-1)_cc``. The inverses are of the *damped* factors (``G + lam mean(diag G) I``);
the numerators use the undamped factors, as the official code does. The compensating updates mix
rows only (``A`` cancels) or columns only (``G`` cancels); see :func:`row_update` and
:func:`col_update`.
"""

from __future__ import annotations

from typing import Literal

import torch


def damped_inverse(factor: torch.Tensor, damp: float) -> torch.Tensor:
    """``(F + damp * mean(diag F) * I)^-1`` for a symmetric PSD ``factor`` ``[n, n]``, by a
    Cholesky factorisation in fp64 (``torch.cholesky_inverse`` is ~30x slower on CPU at n=1536).
    Returned in fp64. A factor that is still singular after damping (e.g. all zeros) gets an
    extra jitter of 1e-8 of its trace, then the identity."""
    f = factor.double()
    n = f.shape[0]
    if n == 0:
        return f.clone()
    eye = torch.eye(n, dtype=f.dtype, device=f.device)
    mean_diag = float(f.diagonal().mean())
    for extra in (0.0, 1e-8):
        shift = damp * mean_diag + extra * max(mean_diag, 1e-30)
        chol, info = torch.linalg.cholesky_ex(f + shift * eye)
        if int(info) == 0:
            return torch.cholesky_solve(eye, chol)
    return eye


def row_costs(w: torch.Tensor, a: torch.Tensor, g_inv_diag: torch.Tensor) -> torch.Tensor:
    """``0.5 (W A W^T)_rr / (G^-1)_rr`` for every row: ``w`` ``[R, C']``, ``a`` ``[C', C']``
    (undamped), ``g_inv_diag`` ``[R]``. NaN (0/0) becomes 0."""
    num = ((w @ a) * w).sum(dim=1)
    cost = 0.5 * num / g_inv_diag
    return torch.nan_to_num(cost, nan=0.0)


def col_costs(w: torch.Tensor, g: torch.Tensor, a_inv_diag: torch.Tensor) -> torch.Tensor:
    """``0.5 (W^T G W)_cc / (A^-1)_cc`` for every column: ``w`` ``[R, C']``, ``g`` ``[R, R]``
    (undamped), ``a_inv_diag`` ``[C']``. NaN (0/0) becomes 0."""
    num = ((g @ w) * w).sum(dim=0)
    cost = 0.5 * num / a_inv_diag
    return torch.nan_to_num(cost, nan=0.0)


def _chunks(index: torch.Tensor, correlate: int) -> list[torch.Tensor]:
    if index.numel() == 0:
        return []
    if correlate <= 0:
        return [index]
    return list(index.split(correlate))


def row_update(w: torch.Tensor, g_inv: torch.Tensor, rows: torch.Tensor, correlate: int = 0) -> torch.Tensor:
    """The change of ``w`` ``[R, C']`` that removes ``rows`` at least cost:
    ``dW = -G^-1[:, R] (G^-1[R, R])^-1 W[R, :]`` (rows ``R`` of ``W + dW`` are exactly zero).
    ``correlate``: 0 solves all rows jointly (the official default); ``k > 0`` solves chunks of
    ``k`` rows separately and sums their updates (1: the "independent" variant)."""
    delta = torch.zeros_like(w)
    for chunk in _chunks(rows, correlate):
        block = g_inv[chunk][:, chunk]  # [k, k]
        coeff = torch.linalg.solve(block, w[chunk])  # [k, C']
        delta -= g_inv[:, chunk] @ coeff
    return delta


def col_update(w: torch.Tensor, a_inv: torch.Tensor, cols: torch.Tensor, correlate: int = 0) -> torch.Tensor:
    """The change of ``w`` ``[R, C']`` that removes ``cols`` at least cost:
    ``dW = -W[:, C] (A^-1[C, C])^-1 A^-1[C, :]``. ``correlate`` as in :func:`row_update`."""
    delta = torch.zeros_like(w)
    for chunk in _chunks(cols, correlate):
        block = a_inv[chunk][:, chunk]  # [k, k] symmetric
        coeff = torch.linalg.solve(block, a_inv[chunk])  # [k, C']
        delta -= w[:, chunk] @ coeff
    return delta


def surgery(
    w: torch.Tensor,
    g_inv: torch.Tensor,
    a_inv: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    *,
    update: Literal["sum", "sequential", "none"] = "sum",
    correlate: int = 0,
) -> torch.Tensor:
    """``w`` after removing ``rows`` and ``cols`` (returned new, fp64 like the inputs).

    ``update="sum"`` (the official default): both updates computed from the pre-shot ``w`` and
    added. ``"sequential"`` (official ``--addupdate``): the column update is computed from the
    row-updated ``w``; this is the exact joint optimum over the union, ``Pi_G W Pi_A``.
    ``"none"``: only zero (K-OBD). The removed rows and columns are zero on return."""
    out = w.clone()
    if update == "sum":
        out += row_update(w, g_inv, rows, correlate) + col_update(w, a_inv, cols, correlate)
    elif update == "sequential":
        out += row_update(out, g_inv, rows, correlate)
        out += col_update(out, a_inv, cols, correlate)
    elif update != "none":
        raise ValueError(f"unknown update {update!r}")
    out[rows] = 0.0
    out[:, cols] = 0.0
    return out
