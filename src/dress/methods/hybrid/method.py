"""``dress-depth``: a parameter share taken partly in whole layers and partly in hidden width.

1. Remove ``hybrid.layers`` decoder layers chosen by SLEB or ShortGPT (:mod:`dress.methods.depth`).
2. Cut the hidden width of the shorter model with DReSS (:mod:`dress.methods.dress`) to the width
   whose parameter count lands nearest ``(1 - ratio)`` of the dense model's: the regularization
   trains every parameter of the shorter model while it moves the removed channels' information,
   then the removal is exact.

:func:`plan` decides both from the dense model alone (layers are alike, so the count after
removing any ``k`` of them is known), and the method runs exactly that plan, so the parameter
count a budget plans is the one the model ends with. The result is a stock checkpoint where each
part is (fewer layers and a narrower width both are).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from dress.adapters import adapter_for, parameter_count
from dress.errors import DressError
from dress.logs import log
from dress.methods.base import MethodOutcome, PruneContext
from dress.methods.depth.method import shortgpt, sleb
from dress.methods.dress.method import dress
from dress.pruning.budget import Shape, fit_budget, width_shapes


def plan(model: nn.Module, config) -> tuple[int, Shape]:
    """``(layers to remove, width shape)`` for ``config.ratio`` of the dense ``model``'s parameters."""
    k = config.hybrid.layers
    n_layers = len(adapter_for(model).decoder_layers(model))
    if k >= n_layers:
        raise DressError(f"--hybrid-layers {k}: the model has {n_layers} layers; keep at least one")
    dense = parameter_count(model)
    shapes = width_shapes(model, config, layers_removed=k)
    return k, fit_budget(shapes, dense, config.ratio).shape  # how far from the budget is recorded, never hidden


def budget_shapes(model: nn.Module, config) -> list[Shape]:
    """For a parameter budget: the one output the plan makes for ``config.ratio``."""
    k, width = plan(model, config)
    return [Shape(config.ratio, width.params, f"{k} layers removed + {width.knob}")]


def dress_depth(ctx: PruneContext) -> MethodOutcome:
    config = ctx.config
    k, width = plan(ctx.model, config)
    log.info(f"dress-depth: remove {k} layers ({config.hybrid.scorer}), then {width.knob} with DReSS "
             f"({width.params / 1e6:.2f}M parameters planned)")
    report: dict = {}
    record: dict = {}
    if k:
        depth_config = config.model_copy(update={"depth": config.depth.model_copy(update={"layers": k})})
        depth = (sleb if config.hybrid.scorer == "sleb" else shortgpt)(replace(ctx, config=depth_config))
        report = {f"layers_{key}" if key == "prune_gap_nats" else key: value for key, value in depth.report.items()}
        record.update(depth.record)
    width_config = config.model_copy(update={"ratio": width.ratio})
    cut = dress(replace(ctx, config=width_config))
    report.update(cut.report)
    record.update(cut.record)
    record["hybrid"] = {"layers_removed": k, "width": width.knob, "planned_params": width.params}
    return MethodOutcome(cut.model, report, record)
