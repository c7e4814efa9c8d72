"""Hidden-width methods: ``direct`` (remove), ``dress`` (regularize the removed channels, then
remove) and ``fpr`` (regularize every channel, then remove: the paper's ablation)."""

from __future__ import annotations

from dress.adapters import adapter_for
from dress.methods import MethodOutcome, PruneContext
from dress.pruning.channels import select_channels
from dress.pruning.hidden import pruned_width, remove_hidden_channels
from dress.resume import recall


def direct(ctx: PruneContext) -> MethodOutcome:
    return _prune_width(ctx, regularize_all=None)


def dress(ctx: PruneContext) -> MethodOutcome:
    return _prune_width(ctx, regularize_all=False)


def fpr(ctx: PruneContext) -> MethodOutcome:
    return _prune_width(ctx, regularize_all=True)


def _prune_width(ctx: PruneContext, regularize_all: bool | None) -> MethodOutcome:
    """``regularize_all``: None = no regularization; False = removed channels; True = all."""
    model, config, log = ctx.model, ctx.config, ctx.log
    adapter = adapter_for(model)
    d = adapter.hidden_size(model)
    d_new, note = pruned_width(model.config, config.ratio, adapter)
    if note:
        log(f"[dress] {note}")
    with ctx.clock.stage("select channels", log):
        # every process removes the main process's choice; a resumed run reuses the recorded one
        removed = recall(
            "channels_removed", {"selection": config.selection, "count": d - d_new},
            lambda: ctx.runtime.broadcast(select_channels(model, d - d_new, config.selection, ctx.scoring_windows())),
            weights=True,
        )

    report: dict = {}
    if regularize_all is not None:
        from dress.methods.regularized import regularize

        with ctx.clock.stage("regularize", log):
            reg = regularize(
                model, removed, ctx.reg_part, config.regularize,
                regularized=list(range(d)) if regularize_all else removed,
                seed=config.seed, bf16=ctx.bf16, checkpoint_dir=ctx.work_dir / "regularize", resume=ctx.resume,
                distill=ctx.distill,
            )
        report["regularization"] = reg.as_dict()
        log(f"[dress] preserved ratio of the removed groups: {reg.preserved_ratio:.4f} (goal <= 0.02)")

    loss_before = ctx.held_out_loss(model) if ctx.held_out_loss else None
    with ctx.clock.stage("remove channels", log):
        result = remove_hidden_channels(model, removed)
    if loss_before is not None:
        loss_after = ctx.held_out_loss(model)
        report["prune_gap_nats"] = loss_after - loss_before
        log(f"[dress] prune gap: {loss_after - loss_before:+.4f} nats "
            f"(held-out loss {loss_before:.4f} -> {loss_after:.4f}; goal <= 0.05)")
    record = {
        "hidden_size": {"before": d, "after": d_new},
        "hidden_channels_removed": result.removed,
        "channel_selection": config.selection,
    }
    return MethodOutcome(model, report, record)
