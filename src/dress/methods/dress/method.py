"""Hidden-width methods: ``direct`` (remove), ``dress`` (regularize the removed channels, then
remove) and ``fpr`` (regularize every channel, then remove: the paper's ablation)."""

from __future__ import annotations

from dress.adapters import adapter_for
from dress.logs import log
from dress.methods.base import MethodOutcome, PruneContext
from dress.methods.dress.memory import REGULARIZE, REMOVE, SELECT
from dress.methods.dress.selection import select_channels
from dress.methods.dress.stage import regularize
from dress.pruning.hidden import remove_hidden_channels, width_choice
from dress.resume import recall


def direct(ctx: PruneContext) -> MethodOutcome:
    return _prune_width(ctx, regularize_all=None)


def dress(ctx: PruneContext) -> MethodOutcome:
    return _prune_width(ctx, regularize_all=False)


def fpr(ctx: PruneContext) -> MethodOutcome:
    return _prune_width(ctx, regularize_all=True)


def _prune_width(ctx: PruneContext, regularize_all: bool | None) -> MethodOutcome:
    """``regularize_all``: None = no regularization; False = removed channels; True = all."""
    model, config = ctx.model, ctx.config
    adapter = adapter_for(model)
    d = adapter.hidden_size(model)
    choice = width_choice(model.config, config.ratio, adapter, config.width_multiple)
    d_new = choice.width
    if choice.note:
        log.info(choice.note)
    with ctx.clock.stage(SELECT):
        # every process removes the main process's choice; a resumed run reuses the recorded one
        removed = recall(
            "channels_removed", {"selection": config.selection, "count": d - d_new},
            lambda: ctx.runtime.broadcast(select_channels(model, d - d_new, config.selection, ctx.scoring_windows())),
            weights=True,
        )

    report: dict = {}
    if regularize_all is not None:
        with ctx.clock.stage(REGULARIZE):
            reg = regularize(
                model, removed, ctx.reg_part, config.regularize,
                regularized=list(range(d)) if regularize_all else removed,
                seed=config.seed, bf16=ctx.bf16, checkpoint_dir=ctx.work_dir / "regularize", resume=ctx.resume,
                distill=ctx.distill,
            )
        report["regularization"] = reg.as_dict()
        log.info(f"preserved ratio of the removed groups: {reg.preserved_ratio:.4f} (goal <= 0.02)")

    result = ctx.remove_measuring_gap(
        REMOVE, lambda: remove_hidden_channels(model, removed), report, goal="; goal <= 0.05")
    record = {
        "hidden_size": {"before": d, "after": d_new},
        "width": choice.as_record(),
        "hidden_channels_removed": result.removed,
        "channel_selection": config.selection,
    }
    if "regularization" in report:
        record["method_summary"] = [
            f"preserved ratio of removed groups {report['regularization']['preserved_ratio']:.4f}"]
    return MethodOutcome(model, report, record)
