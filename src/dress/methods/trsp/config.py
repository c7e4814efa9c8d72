"""TRSP's own config block (``--trsp-*``): both stages share one training config."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from dress.training.config import TrainingConfig


class TRSPConfig(TrainingConfig):
    """TRSP (arXiv 2505.18232), see :mod:`dress.methods.trsp.method`. Stage 1 learns one gate per
    layer with ``lam1 * sum|s_i|`` added to the LM loss; stage 2 trains all parameters with
    ``lam2 * sum_i mean_tokens ||y_i - x_i||^2 / ref_i`` added for the chosen layers (``ref_i``:
    the same mean at the start of stage 2, so ``lam2`` is unit-free); then they are removed.
    Weights train at ``lr``, gates at ``gate_lr``. Defaults measured on the bundled SmolLM2
    (docs/depth.md)."""

    title: ClassVar[str] = "TRSP (both stages)"
    flag_prefix: ClassVar[str] = "trsp-"
    lam1: float = Field(0.05, ge=0.0, description="stage 1: l1 weight on the layer gates")
    steps1: int = Field(24, ge=0, description="stage 1 optimizer steps")
    train1: Literal["gates", "all"] = Field("gates", description="stage 1 trains only the gates, or every parameter")
    lam2: float = Field(1.0, ge=0.0, description="stage 2: weight of the chosen layers' relative update norm")
    steps2: int = Field(24, ge=0, description="stage 2 optimizer steps")
    shrink2: float = Field(
        1.5, ge=0.0, description="stage 2: proximal shrink of the chosen layers' gates, unit-free like --lam "
        "(1.5: zero at ~40% of stage 2; 0: the loss penalty only)")
    lr: float = Field(1e-4, gt=0.0, description="learning rate of the weights")
    gate_lr: float = Field(2e-2, ge=0.0, description="learning rate of the gates (0: gates frozen)")
