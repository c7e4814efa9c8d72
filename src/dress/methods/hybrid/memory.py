"""What dress-depth holds per stage (:class:`dress.memory_plan.MethodMemory`): the depth method's
scoring and removal on the dense model, then the width stages on the shorter one."""

from __future__ import annotations

from dress.memory_plan import MethodMemory, ModelShape, RunSettings, StageMemory, inference_bytes, narrower, shorter
from dress.methods.depth.memory import REMOVE as REMOVE_LAYERS, SCORE
from dress.methods.dress.memory import _settings as width_settings, width_stages
from dress.pruning.widths import reachable_widths


def _settings(config) -> dict:
    return {**width_settings(config), "score_batch": config.depth.batch_size,
            "method_detail": {"layers": config.hybrid.layers, "scorer": config.hybrid.scorer}}


def _shorter(shape: ModelShape, run: RunSettings) -> ModelShape:
    return shorter(shape, (run.method_detail or {}).get("layers", 0))


def _pruned(shape: ModelShape, run: RunSettings) -> ModelShape:
    """The shorter model at the width whose count is nearest the parameter share (the method's plan)."""
    short = _shorter(shape, run)
    target = int(shape.params * (1.0 - run.ratio))
    widths = reachable_widths(short.hidden, short.heads, run.width_multiple)
    return min((narrower(short, w) for w in widths), key=lambda s: (abs(s.params - target), s.params), default=short)


def _stages(shape: ModelShape, small: ModelShape, run: RunSettings, strategy: str, n: int) -> list[StageMemory]:
    detail = run.method_detail or {}
    stages = []
    if detail.get("layers"):
        weights = {"weights": 4.0 * shape.params}
        stages += [StageMemory(SCORE[detail.get("scorer", "shortgpt")],
                               {**weights, "scoring": inference_bytes(shape, run.score_batch, run.train_seq)}),
                   StageMemory(REMOVE_LAYERS, dict(weights))]
    return stages + width_stages(_shorter(shape, run), small, run, strategy, n)


MEMORY = MethodMemory(settings=_settings, pruned=_pruned, stages=_stages)
