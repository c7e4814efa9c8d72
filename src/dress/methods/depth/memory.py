"""What the layer-removal methods (sleb, shortgpt) hold per stage (:class:`dress.memory_plan.MethodMemory`).
Stage names are the ones :mod:`dress.methods.depth.method` records."""

from __future__ import annotations

from dress.memory_plan import MethodMemory, ModelShape, RunSettings, StageMemory, inference_bytes, layers_for, shorter

SCORE = {"sleb": "score layers (SLEB)", "shortgpt": "score layers (Block Influence)"}
REMOVE = "remove layers"


def settings(config) -> dict:
    return {"score_batch": config.depth.batch_size, "scores": True, "trains": False}


def pruned(shape: ModelShape, run: RunSettings) -> ModelShape:
    return shorter(shape, layers_for(shape, run.ratio))


def _stages(shape: ModelShape, small: ModelShape, run: RunSettings, strategy: str, n: int) -> list[StageMemory]:
    weights = {"weights": 4.0 * shape.params}
    return [StageMemory(SCORE[run.method], {**weights, "scoring": inference_bytes(shape, run.score_batch, run.train_seq)}),
            StageMemory(REMOVE, dict(weights))]


MEMORY = MethodMemory(settings=settings, pruned=pruned, stages=_stages)
