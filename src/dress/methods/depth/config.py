"""The layer-removal block shared by ``sleb``, ``shortgpt`` and ``trsp``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from dress.config_base import StrictConfig, flag


class DepthConfig(StrictConfig):
    """How many layers to remove, and how many calibration windows score them. By default the
    ratio picks the number of layers whose parameters come closest to it (see
    :func:`dress.pruning.layers.layers_for_ratio`)."""

    title: ClassVar[str] = "layer removal (sleb, shortgpt, trsp)"
    layers: int | None = Field(None, ge=1, description="remove exactly this many layers (overrides --ratio)")
    score_samples: int | None = Field(
        16, ge=1, description="calibration windows that score layers (SLEB, ShortGPT; 'all' for every window; paper: 128 x 2048)")
    batch_size: int = Field(4, ge=1, description="windows per scoring forward",
                            json_schema_extra=flag("--score-batch-size"))
