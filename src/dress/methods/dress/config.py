"""DReSS's own config block: the regularization stage (``--lam``, ``--steps``, ...)."""

from __future__ import annotations

from typing import Literal

from typing import ClassVar

from pydantic import Field

from dress.training.config import TrainingConfig


class RegularizeConfig(TrainingConfig):
    """Regularization: train all parameters on the regularization part while a group penalty
    drives the removed channels' groups to zero. ``lam`` is unit-free (see
    :mod:`dress.methods.dress.penalty`): over the run the penalty alone removes ``lam`` times each
    group's starting size, so ``lam=1`` reaches zero at the last step and ``lam=2`` about halfway."""

    title: ClassVar[str] = "regularization (dress, fpr)"
    norm: Literal["l2", "l1"] = Field("l2", description="group penalty: l2 (group lasso) or l1")
    lam: float = Field(
        1.5, ge=0.0,
        description="penalty strength, unit-free: the penalty alone removes LAM times each group's starting size "
        "over the run (1: zero at the last step, 2: about halfway)",
    )
    steps: int = Field(144, ge=0, description="optimizer steps (one pass over the 144 regularization windows of the default draw)")
    warmup_steps: int = Field(4, ge=0, description="linear warm-up steps (capped at the stage's steps)")
