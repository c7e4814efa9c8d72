"""What TRSP holds per stage (:class:`dress.memory_plan.MethodMemory`); names as :mod:`.method` records."""

from __future__ import annotations

from dress.memory_plan import MethodMemory, ModelShape, RunSettings, StageMemory, training_stage
from dress.methods.depth.memory import REMOVE, pruned

STAGE1 = "TRSP stage 1 (layer gates, l1)"
STAGE2 = "TRSP stage 2 (shrink chosen layers' updates)"


def _settings(config) -> dict:
    return {"train_batch": config.trsp.batch_size, "trains": True, "scores": False,
            "gradient_checkpointing": config.trsp.gradient_checkpointing}


def _stages(shape: ModelShape, small: ModelShape, run: RunSettings, strategy: str, n: int) -> list[StageMemory]:
    stages = [training_stage(name, shape, run, strategy, n, full=True, batch=run.train_batch,
                             checkpointing=run.gradient_checkpointing) for name in (STAGE1, STAGE2)]
    return stages + [StageMemory(REMOVE, {"weights": 4.0 * shape.params})]


MEMORY = MethodMemory(settings=_settings, pruned=pruned, stages=_stages)
