"""What SliceGPT holds per stage (:class:`dress.memory_plan.MethodMemory`); the name as :mod:`.method` records it."""

from __future__ import annotations

from dress.memory_plan import MethodMemory, ModelShape, RunSettings, StageMemory, narrower, width_for
from dress.methods.slicegpt.counts import slicing_adds

SLICE = "fold norms, rotate and slice (PCA)"


def _settings(config) -> dict:
    return {"score_batch": config.evaluate.batch_size, "scores": True, "trains": False}


def _pruned(shape: ModelShape, run: RunSettings) -> ModelShape:
    width = width_for(shape, run)
    # counted as .method.budget_shapes counts them: a shortcut per sub-block, a head map for a tied
    # RMS head; folding removes the norms' gains (and biases)
    parallel = shape.model_type == "phi"
    layer_norm = shape.model_type in ("opt", "phi")
    shortcuts = shape.layers * (1 if parallel else 2) + int(shape.tied and not layer_norm)
    norm_entries = (shape.layers * (1 if parallel else 2) + 1) * (2 if layer_norm else 1)
    return narrower(shape, width, extra=slicing_adds(width, shortcuts, norm_entries))


def _stages(shape: ModelShape, small: ModelShape, run: RunSettings, strategy: str, n: int) -> list[StageMemory]:
    stream = 2 * 4 * run.train_seq * shape.hidden * 64  # two layer streams of the calibration windows (capped, see .method)
    return [StageMemory(SLICE, {"weights": 4.0 * shape.params, "calibration stream": stream})]


MEMORY = MethodMemory(settings=_settings, pruned=_pruned, stages=_stages)
