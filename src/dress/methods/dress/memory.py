"""What the width methods (dress, fpr, direct) hold per stage (:class:`dress.memory_plan.MethodMemory`).
Stage names are the ones :mod:`dress.methods.dress.method` records."""

from __future__ import annotations

from dress.memory_plan import (MethodMemory, ModelShape, RunSettings, StageMemory, inference_bytes, narrower,
                               training_stage, width_for)

SELECT = "select channels"
REGULARIZE = "regularize"
REMOVE = "remove channels"


def _settings(config) -> dict:
    trains = config.method != "direct" and config.regularize.steps > 0
    return {"train_batch": config.regularize.batch_size, "trains": trains,
            "gradient_checkpointing": config.regularize.gradient_checkpointing,
            "score_batch": 4, "scores": config.selection == "activation"}


def _pruned(shape: ModelShape, run: RunSettings) -> ModelShape:
    return narrower(shape, width_for(shape, run))


def width_stages(shape: ModelShape, small: ModelShape, run: RunSettings, strategy: str, n: int) -> list[StageMemory]:
    """Select (a scoring forward with ``--selection activation``), regularize (full training), remove."""
    weights = {"weights": 4.0 * shape.params}
    scoring = inference_bytes(shape, run.score_batch, run.train_seq) if run.scores else 0.0
    stages = [StageMemory(SELECT, {**weights, "scoring": scoring})]
    if run.trains:
        stages.append(training_stage(REGULARIZE, shape, run, strategy, n, full=True, batch=run.train_batch,
                                     checkpointing=run.gradient_checkpointing))
    # tensors are replaced one at a time: the old model plus the largest new tensor (the embedding table)
    stages.append(StageMemory(REMOVE, {**weights, "one new tensor": 4.0 * shape.vocab * small.hidden}))
    return stages


MEMORY = MethodMemory(settings=_settings, pruned=_pruned, stages=width_stages)
