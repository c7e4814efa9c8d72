"""TRSP (arXiv 2505.18232): two-stage regularized removal of whole decoder layers.

Stage 1 -- which layers. A gate ``s_i`` (init 1) scales everything layer ``i`` writes into the
residual stream (:class:`dress.pruning.gates.LayerGates`). Train on the regularization windows with
``LM loss + lam1 * sum_i |s_i|``: only the gates (``train1="gates"``) or every parameter
(``"all"``). The ``k`` layers with the smallest ``|s_i|`` are chosen (``k`` from the ratio or
``--layers``).

Stage 2 -- move their knowledge. Train every parameter (gates included) with
``LM loss + lam2 * sum_{i chosen} mean_tokens ||y_i - x_i||^2 / ref_i``, where ``x_i``/``y_i`` are
layer ``i``'s input/output hidden states collected by hooks during the LM forward and ``ref_i`` is
that mean measured just before stage 2 (so ``lam2`` has no units and the penalty starts at
``lam2 * k``). The chosen layers' updates shrink; the LM loss makes the kept layers take over.
With ``shrink2 > 0`` (default) the chosen layers' gates also take a decoupled proximal step after
every optimizer step, ``|s_i| <- max(0, |s_i| - shrink2 * lr_t / sum_t lr_t * |s_i(0)|)``, the
scheme of :mod:`dress.methods.dress.penalty`: ``shrink2 = 1.5`` brings them to exactly zero at about 40% of
stage 2, so the chosen layers' contribution is gone (removal exact) while the rest of the stage
trains the kept layers without them. The loss penalty alone, under Adam, left 34-43% of the
updates in place on SmolLM2 (docs/depth.md).

Then: fold every gate into its layer's writers (exact, see :mod:`dress.pruning.gates`), and remove
the chosen layers (:func:`dress.pruning.layers.remove_layers`) -- a stock checkpoint with fewer
layers. Recorded: the gates after each stage, the chosen layers, each stage's loss curve, how much
of each chosen layer's update survived stage 2 (``update_ratio``, RMS after / before), and the
prune gap (held-out loss after removal minus before).

Both stages reuse :func:`dress.training.loop.train` (checkpoints in ``<out>.checkpoints/trsp-stage{1,2}``,
so ``--resume`` continues either stage).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dress.logs import log
from dress.methods.base import MethodOutcome, PruneContext
from dress.methods.depth.method import finish_layer_removal, layer_count
from dress.pruning.shrink import soft_threshold
from dress.pruning.gates import LayerGates, record_residual_updates
from dress.training.config import TrainSettings
from dress.training.loop import train
from dress.training.schedule import total_learning_rate
from dress.methods.trsp.memory import STAGE1, STAGE2

REFERENCE_WINDOWS = 4  # windows on which the stage-2 reference update norms are measured


def trsp(ctx: PruneContext) -> MethodOutcome:
    model = ctx.model
    k, note = layer_count(ctx)
    gates = LayerGates(model)

    with ctx.clock.stage(STAGE1):
        history1 = _stage1(ctx, gates)
    gates1 = gates.values()
    chosen = sorted(sorted(range(len(gates1)), key=lambda i: (abs(gates1[i]), i))[:k])
    log.info(f"TRSP gates after stage 1: {', '.join(f'{g:.3f}' for g in gates1)}")
    log.info(f"TRSP chooses layers {chosen} (smallest |gate|)")

    with ctx.clock.stage(STAGE2):
        reference = update_norms(model, ctx.reg_part[:REFERENCE_WINDOWS], chosen, ctx.device)
        history2 = _stage2(ctx, gates, chosen, reference)
        after = update_norms(model, ctx.reg_part[:REFERENCE_WINDOWS], chosen, ctx.device)
    update_ratio = {str(i): math.sqrt(after[i] / max(reference[i], 1e-30)) for i in chosen}
    log.info(f"TRSP update RMS kept through stage 2 (after/before): "
        f"{', '.join(f'{i}: {r:.3f}' for i, r in update_ratio.items())}")

    gates2 = gates.values()
    gates.fold()
    report = {
        "trsp": {
            "gates_stage1": gates1,
            "gates_stage2": gates2,
            "chosen": chosen,
            "update_ratio": update_ratio,
            "stage1": history1.as_dict(),
            "stage2": history2.as_dict(),
        }
    }
    outcome = finish_layer_removal(ctx, chosen, note, report)
    outcome.record["trsp_gates"] = {"stage1": gates1, "final": gates2}
    return outcome


def _settings(ctx: PruneContext, steps: int, stage: int) -> TrainSettings:
    return ctx.config.trsp.settings(steps, seed=ctx.config.seed + stage, bf16=ctx.bf16, desc=f"TRSP stage {stage}")


def _param_groups(model: nn.Module, gates: list[nn.Parameter], train_weights: bool, cfg) -> list[dict]:
    """Gates at ``gate_lr``; weights (if trained) at ``lr``. Sets ``requires_grad`` to match."""
    gate_ids = {id(g) for g in gates}
    weights = [p for p in model.parameters() if id(p) not in gate_ids]
    for p in weights:
        p.requires_grad_(train_weights)
    for g in gates:
        g.requires_grad_(True)
    groups = [{"params": gates, "lr_scale": cfg.gate_lr / cfg.lr}]
    if train_weights:
        groups.append({"params": weights, "lr_scale": 1.0})
    return groups


def _stage1(ctx: PruneContext, gates: LayerGates):
    cfg = ctx.config.trsp
    params = gates.parameters()
    groups = _param_groups(ctx.model, params, cfg.train1 == "all", cfg)

    def l1_penalty() -> torch.Tensor:
        return cfg.lam1 * torch.stack([g.abs() for g in params]).sum()

    return train(
        ctx.model, ctx.reg_part, _settings(ctx, cfg.steps1, 1), None,
        ctx.work_dir / "trsp-stage1", ctx.resume, extra_loss=l1_penalty, param_groups=groups, distill=ctx.distill,
    )


def _stage2(ctx: PruneContext, gates: LayerGates, chosen: list[int], reference: dict[int, float]):
    cfg = ctx.config.trsp
    model = ctx.model
    groups = _param_groups(model, gates.parameters(), True, cfg)
    terms: list[torch.Tensor] = []

    def collect(i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        # x, y: [batch, seq, d]; mean over tokens of the squared update norm, relative to stage-2 start
        terms.append((y - x).float().pow(2).sum(-1).mean() / max(reference[i], 1e-30))

    def penalty() -> torch.Tensor | None:
        if not terms:
            return None
        value = cfg.lam2 * torch.stack(terms).sum()
        terms.clear()
        return value

    settings = _settings(ctx, cfg.steps2, 2)
    shrink = _gate_shrink(gates.parameters(), chosen, cfg.shrink2, settings) if cfg.shrink2 > 0 else None
    # Start each forward with an empty list: gradient checkpointing re-runs layer forwards during
    # backward, and what those re-runs append must not leak into the next step's penalty.
    clear = model.register_forward_pre_hook(lambda *_: terms.clear())
    try:
        with record_residual_updates(model, chosen, collect):
            return train(
                model, ctx.reg_part, settings, shrink,
                ctx.work_dir / "trsp-stage2", ctx.resume, extra_loss=penalty, param_groups=groups,
                distill=ctx.distill,
            )
    finally:
        clear.remove()
        for p in model.parameters():
            p.requires_grad_(False)


def _gate_shrink(params: list[nn.Parameter], chosen: list[int], shrink: float, settings: TrainSettings):
    """``after_step`` hook: the decoupled proximal shrink of the chosen gates (module docstring)."""
    start = {i: abs(float(params[i].detach())) for i in chosen}
    total_lr = total_learning_rate(settings)

    @torch.no_grad()
    def after_step(_step: int, lr_t: float) -> None:
        for i in chosen:
            g = params[i]
            g.copy_(soft_threshold(g, shrink * lr_t / total_lr * start[i]))

    return after_step


@torch.no_grad()
def update_norms(model: nn.Module, windows: torch.Tensor, indices: list[int], device: torch.device) -> dict[int, float]:
    """Mean over tokens of ``||y_i - x_i||^2`` for each decoder layer ``i`` in ``indices``."""
    sums = dict.fromkeys(indices, 0.0)
    tokens = 0

    def accumulate(i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        sums[i] += float((y - x).float().pow(2).sum(-1).sum())

    model.eval()
    with record_residual_updates(model, indices, accumulate):
        for start in range(0, windows.shape[0], 2):
            ids = windows[start : start + 2].to(device)
            model(input_ids=ids, use_cache=False)
            tokens += ids.numel()
    return {i: s / max(tokens, 1) for i, s in sums.items()}
