"""The width + depth method's own block: how many layers go before the width is cut."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from dress.config_base import StrictConfig


class HybridConfig(StrictConfig):
    """``dress-depth``: remove ``layers`` whole layers (chosen by ``scorer``), then DReSS on the hidden
    width for the rest of the parameter share ``--ratio``. The regularization then trains the
    shorter model too, so it also repairs what the removed layers did."""

    title: ClassVar[str] = "width + depth (dress-depth)"
    flag_prefix: ClassVar[str] = "hybrid-"
    layers: int = Field(3, ge=0, description="whole layers removed first (0: DReSS on the width alone)")
    scorer: Literal["sleb", "shortgpt"] = Field("shortgpt", description="which layers: SLEB (greedy, calibration "
                                                "perplexity) or ShortGPT (Block Influence, one forward)")
