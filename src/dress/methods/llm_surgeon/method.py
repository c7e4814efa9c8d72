"""The multi-shot loop of LLM Surgeon (structured) and its entry point ``llm_surgeon(ctx)``.

For shot ``t = 1..T`` (target ``s_t = t s / T`` of the decoder linear entries, cumulative):

1. K-FAC factors of every decoder linear on the calibration windows, on the *current* model
   (:func:`~dress.methods.llm_surgeon.curvature.estimate_factors`);
2. per matrix ``W~ = [W | b]``: dead rows (all zero, or ``G_rr = 0``) and dead columns (all zero, or
   ``A_cc = 0``) are zeroed and dropped; on the alive part, damped inverses and the OBS row and
   column costs (:mod:`~dress.methods.llm_surgeon.costs`), all before any update;
3. one global threshold over all costs (:func:`~dress.methods.llm_surgeon.threshold.global_threshold`);
4. per matrix, the correlated update of its chosen rows and columns, which are then zero.

Then (beyond the official code) the dead FFN neurons and KV groups are cut
(:mod:`~dress.methods.llm_surgeon.compact`). The recovery that follows keeps every zero row and
column at zero (``MethodOutcome.keep_zero_structures``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from dress.adapters import Adapter, adapter_for, parameter_count
from dress.errors import DressError
from dress.logs import log as _log
from dress.methods.base import MethodOutcome, PruneContext
from dress.methods.llm_surgeon.compact import REBUILD, compact
from dress.methods.llm_surgeon.config import LLMSurgeonConfig
from dress.methods.llm_surgeon.memory import COMPACT, shots_stage
from dress.methods.llm_surgeon.costs import col_costs, damped_inverse, row_costs, surgery
from dress.methods.llm_surgeon.curvature import Factors, decoder_linears, estimate_factors
from dress.methods.llm_surgeon.threshold import MatrixCosts, global_threshold
from dress.pruning.budget import Shape


def augmented_weight(linear: nn.Linear) -> torch.Tensor:
    """``[W | b]`` ``[R, C']`` in fp64 (``C' = C + 1`` with a bias)."""
    w = linear.weight.detach().double()
    if linear.bias is None:
        return w.clone()
    return torch.cat([w, linear.bias.detach().double()[:, None]], dim=1)


@torch.no_grad()
def write_weight(linear: nn.Linear, w: torch.Tensor) -> None:
    c = linear.weight.shape[1]
    linear.weight.copy_(w[:, :c].to(linear.weight.dtype))
    if linear.bias is not None:
        linear.bias.copy_(w[:, c].to(linear.bias.dtype))


def linear_entries(linears: dict[str, nn.Linear]) -> int:
    """Entries of all ``W~`` (weights and biases) — the official denominator."""
    return sum(lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0) for lin in linears.values())


def zero_entries(linears: dict[str, nn.Linear]) -> int:
    """Entries of all ``W~`` that lie in a zero row (weights and bias) or a zero column: what removing
    structures zeroes. Isolated exact zeros (a dequantized checkpoint has many: 4.5% of Gemma3-270M's
    bundled linears) are not removed structure and are not counted."""
    total = 0
    for lin in linears.values():
        w = lin.weight.detach()
        rows = (w == 0).all(dim=1)
        if lin.bias is not None:
            rows &= lin.bias.detach() == 0
        r, c = int(rows.sum()), int((w == 0).all(dim=0).sum())
        n_rows, n_cols = w.shape[0], w.shape[1] + (1 if lin.bias is not None else 0)
        total += r * n_cols + c * n_rows - r * c
    return total


@dataclass
class _Alive:
    rows: torch.Tensor  # alive row indices
    cols: torch.Tensor  # alive column indices
    g_inv: torch.Tensor  # damped inverse over the alive rows (fp32 to save memory)
    a_inv: torch.Tensor


@torch.no_grad()
def surgeon_shot(
    linears: dict[str, nn.Linear], factors: Factors, budget: int, cfg: LLMSurgeonConfig
) -> dict:
    """One shot on ``linears`` with ``factors`` (consumed): remove structures until ``budget``
    entries of all ``W~`` are zero. Returns what was done."""
    alive: dict[str, _Alive] = {}
    matrices: list[MatrixCosts] = []
    dead_rows = dead_cols = 0
    for name, lin in linears.items():
        w = augmented_weight(lin)  # [R, C']
        g = factors.g_of(name).double()  # [R, R]
        a = factors.a(name).double()  # [C', C']
        factors.drop(name)
        dr = (w == 0).all(dim=1) | (g.diagonal() == 0)
        dc = (w == 0).all(dim=0) | (a.diagonal() == 0)
        dead_rows += int(dr.sum())
        dead_cols += int(dc.sum())
        ar, ac = torch.nonzero(~dr).flatten(), torch.nonzero(~dc).flatten()
        ws, gs, as_ = w[ar][:, ac], g[ar][:, ar], a[ac][:, ac]
        g_inv, a_inv = damped_inverse(gs, cfg.damp_g), damped_inverse(as_, cfg.damp_a)
        rc = torch.full((w.shape[0],), -math.inf, dtype=torch.float64, device=w.device)
        cc = torch.full((w.shape[1],), -math.inf, dtype=torch.float64, device=w.device)
        rc[ar] = row_costs(ws, as_, g_inv.diagonal())
        cc[ac] = col_costs(ws, gs, a_inv.diagonal())
        matrices.append(MatrixCosts(rc.cpu(), cc.cpu()))  # the global threshold runs on the host
        alive[name] = _Alive(ar, ac, g_inv.float(), a_inv.float())
        del w, g, a, ws, gs, as_
    threshold = global_threshold(matrices, budget)
    rows_removed = cols_removed = 0
    for (name, lin), (rows, cols) in zip(linears.items(), threshold.selections):
        live = alive.pop(name)
        w = augmented_weight(lin)
        rows, cols = rows.to(w.device), cols.to(w.device)
        sub_r = torch.nonzero(torch.isin(live.rows, rows)).flatten()
        sub_c = torch.nonzero(torch.isin(live.cols, cols)).flatten()
        rows_removed += int(rows.numel())
        cols_removed += int(cols.numel())
        new = torch.zeros_like(w)
        if live.rows.numel() and live.cols.numel():
            ws = w[live.rows][:, live.cols]
            updated = surgery(ws, live.g_inv.double(), live.a_inv.double(), sub_r, sub_c,
                              update=cfg.update, correlate=cfg.correlate)
            new[live.rows[:, None], live.cols[None, :]] = updated
        write_weight(lin, new)
    return {
        "tau": threshold.tau,
        "counted_entries": threshold.counted,
        "rows_removed": rows_removed,
        "cols_removed": cols_removed,
        "dead_rows_at_start": dead_rows,
        "dead_cols_at_start": dead_cols,
    }


def surgeon_prune(
    model: nn.Module,
    windows: torch.Tensor,
    budget: int,
    cfg: LLMSurgeonConfig,
    *,
    log=_log.info,
    held_out_loss=None,
) -> list[dict]:
    """Run the ``cfg.shots`` shots on ``model`` in place, zeroing ``budget`` entries of the
    decoder linears in all (linear schedule). Returns one report per shot."""
    adapter = adapter_for(model)
    linears = decoder_linears(model, adapter)
    total = linear_entries(linears)
    if budget > total:
        raise DressError(f"LLM Surgeon cannot zero {budget} entries: the decoder linears hold {total}")
    reports = []
    for t in range(1, cfg.shots + 1):
        start = time.perf_counter()
        shot_budget = int(round(budget * t / cfg.shots))
        factors = estimate_factors(model, adapter, windows, batch_size=cfg.batch_size,
                                   progress=_curvature_progress(log, t, cfg.shots))
        curvature_s = time.perf_counter() - start
        calib_loss = factors.loss
        done = surgeon_shot(linears, factors, shot_budget, cfg)
        del factors
        zeros = zero_entries(linears)
        report = {
            "shot": t,
            "target_entries": shot_budget,
            "zero_entries": zeros,
            "zero_fraction": zeros / total,
            "calibration_loss_before": calib_loss,
            "curvature_seconds": round(curvature_s, 1),
            **done,
        }
        if held_out_loss is not None:
            report["held_out_loss"] = float(held_out_loss(model))
        report["seconds"] = round(time.perf_counter() - start, 1)
        reports.append(report)
        held = f", held-out loss {report['held_out_loss']:.4f}" if "held_out_loss" in report else ""
        log(f"LLM Surgeon shot {t}/{cfg.shots}: {zeros / total:.2%} of decoder linear entries zero "
            f"(target {shot_budget / total:.2%}; {done['rows_removed']} rows, {done['cols_removed']} columns), "
            f"calibration loss before {calib_loss:.4f}{held}; {report['seconds']:.0f} s "
            f"(curvature {curvature_s:.0f} s)")
    return reports


def _curvature_progress(log, shot: int, shots: int):
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] > 60:
            last[0] = now
            log(f"  shot {shot}/{shots}: curvature {done}/{total} windows")

    return progress


def layer_allocation(model: nn.Module, adapter: Adapter) -> dict:
    """Zero fraction per layer and per matrix role (the allocation the global threshold chose)."""
    per_layer, per_role = [], {}
    for layer in adapter.decoder_layers(model):
        zeros = total = 0
        for rel in adapter.layer_readers + adapter.layer_writers:
            lin = layer.get_submodule(rel)
            z = zero_entries({rel: lin})
            n = linear_entries({rel: lin})
            zeros, total = zeros + z, total + n
            role = per_role.setdefault(rel, [0, 0])
            role[0] += z
            role[1] += n
        per_layer.append(round(zeros / total, 4))
    return {"per_layer": per_layer, "per_role": {k: round(z / n, 4) for k, (z, n) in per_role.items()}}


def calibration_windows(ctx: PruneContext) -> torch.Tensor:
    windows = ctx.reg_part if ctx.reg_part is not None and ctx.reg_part.shape[0] > 0 else ctx.scoring_windows()
    if windows is None:
        raise DressError("--method llm-surgeon needs calibration windows for its curvature; raise --samples")
    limit = ctx.config.llm_surgeon.samples
    return windows if limit is None else windows[:limit]


def llm_surgeon(ctx: PruneContext) -> MethodOutcome:
    model, config, log = ctx.model, ctx.config, _log.info
    cfg: LLMSurgeonConfig = config.llm_surgeon
    adapter = adapter_for(model)
    windows = calibration_windows(ctx)
    linears = decoder_linears(model, adapter)
    total = linear_entries(linears)
    params_dense = parameter_count(model)
    if cfg.target == "params":
        budget = int(round(config.ratio * params_dense))
        if budget > total:
            raise DressError(
                f"--ratio {config.ratio} of all {params_dense} parameters is more than the decoder linears hold "
                f"({total}); lower --ratio or use llm_surgeon.target=linear")
        how = (f"{config.ratio:.0%} of all parameters ({budget / 1e6:.1f}M) = {budget / total:.1%} of the decoder "
               f"linear entries")
    else:
        budget = int(round(config.ratio * total))
        how = f"{config.ratio:.0%} of the decoder linear entries ({budget / 1e6:.1f}M)"
    log(f"LLM Surgeon: zero {how} in {cfg.shots} shots; curvature on {windows.shape[0]} x "
        f"{windows.shape[1]} tokens per shot")
    loss_before = ctx.held_out_loss(model) if ctx.held_out_loss else None
    with ctx.clock.stage(shots_stage(cfg.shots)):
        shots = surgeon_prune(model, windows, budget, cfg, log=log,
                              held_out_loss=ctx.held_out_loss if cfg.eval_each_shot else None)
    zeros = zero_entries(linears)
    allocation = layer_allocation(model, adapter)
    widths = None
    if cfg.compact:
        with ctx.clock.stage(COMPACT):
            widths = compact(model)
    params_after = parameter_count(model)
    zeros_kept = zero_entries(decoder_linears(model, adapter))
    counts = {
        "target": cfg.target,
        "linear_entries": total,
        "target_entries": budget,
        "zeroed_entries": zeros,
        "nominal_zero_fraction": zeros / total,  # the paper's count (decoder linear weights and biases)
        "params_removed": params_dense - params_after,
        "params_removed_fraction": (params_dense - params_after) / params_dense,
        "zeros_kept_in_place": zeros_kept,
    }
    log(f"LLM Surgeon: {zeros / total:.2%} of decoder linear entries zero ({zeros / 1e6:.1f}M = "
        f"{zeros / params_dense:.1%} of all parameters); physically removed {(params_dense - params_after) / 1e6:.1f}M "
        f"({(params_dense - params_after) / params_dense:.1%}); {zeros_kept / 1e6:.1f}M zeros stay in place")
    report: dict = {"llm_surgeon": {"shots": shots, "counts": counts, "allocation": allocation,
                                    "calibration_windows": list(windows.shape)}}
    if loss_before is not None:
        loss_after = ctx.held_out_loss(model)
        report["prune_gap_nats"] = loss_after - loss_before
        log(f"prune gap: {loss_after - loss_before:+.4f} nats (held-out loss {loss_before:.4f} -> {loss_after:.4f})")
    record: dict = {"loader": "dress" if widths is not None else "transformers", "llm_surgeon_counts": counts,
                    "method_summary": [
                        f"zeroed       {counts['nominal_zero_fraction']:.1%} of decoder linear entries "
                        f"({counts['zeroed_entries'] / 1e6:.1f}M; the paper's count); physically removed "
                        f"{counts['params_removed'] / 1e6:.1f}M ({counts['params_removed_fraction']:.1%}), "
                        f"{counts['zeros_kept_in_place'] / 1e6:.1f}M zeros kept in place"]}
    if widths is not None:
        record["stock_checkpoint"] = False
        record["note"] = ("per-layer FFN and attention widths differ (see rebuild.args.layers); the config.json "
                          "keeps the dense sizes, so load this folder with dress.load, not stock transformers")
        record["rebuild"] = {"method": REBUILD, "args": {"layers": widths}}
    return MethodOutcome(model, report, record, keep_zero_structures=True)


def budget_shapes(model: nn.Module, config) -> list[Shape]:
    """For a parameter budget (:mod:`dress.pruning.budget`): LLM Surgeon zeroes any number of entries,
    so its one shape zeroes exactly ``config.ratio`` of all parameters (in ``--surgeon-target``'s units);
    the kept count is of non-zero parameters (whole dead rows and columns are also cut physically)."""
    dense = parameter_count(model)
    zeroed = int(round(config.ratio * dense))
    total = linear_entries(decoder_linears(model, adapter_for(model)))
    ratio = config.ratio if config.llm_surgeon.target == "params" else zeroed / total
    return [Shape(ratio, dense - zeroed, f"{zeroed / 1e6:.2f}M decoder-linear entries zeroed")]
