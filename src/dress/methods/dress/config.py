"""DReSS's own config block: the regularization stage (``--lam``, ``--steps``, ...)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from dress.training.config import TrainingConfig


class RegularizeConfig(TrainingConfig):
    """Regularization: train all parameters on the regularization part while a group penalty
    acts on the removed channels' groups. Two modes (:mod:`dress.methods.dress.stage`):

    * ``proximal`` (default): a decoupled proximal shrink drives the groups to exactly zero, so the
      cut is lossless. ``lam`` is unit-free (see :mod:`dress.methods.dress.penalty`): the shrink alone
      removes ``lam`` times each group's starting size over the first ``shrink_until`` of the steps
      (in units of their summed learning rate), so ``lam=1`` reaches zero at that point and ``lam=2`` about halfway to it;
      after ``shrink_until`` the groups are held at zero and the rest of the stage trains what stays.
    * ``penalty`` (the paper's Eqs. 1-4): ``penalty_lam * sum_g ||g||`` is added to the loss and
      Adam trains against it; what remains of the groups is cut anyway (the prune gap says what that
      cost) and recovery repairs. ``penalty_lam`` is on the paper's scale (its optimum: 1e-3).
    """

    title: ClassVar[str] = "regularization (dress, fpr)"
    flag_prefix: ClassVar[str] = "reg-"
    # named protocols (dress.presets): the paper's budget for LLaMA-2-7B (configs/llama2-7b-paper.json)
    presets: ClassVar[dict[str, dict]] = {"paper": {
        "steps": 188, "lr": 2e-5, "warmup_steps": 10, "batch_size": 1, "grad_accum": 8,
        "gradient_checkpointing": True, "checkpoint_every": 25}}
    # the flags these fields had before they were prefixed; still accepted
    unprefixed_aliases: ClassVar[tuple[str, ...]] = (
        "norm", "lam", "steps", "lr", "warmup_steps", "batch_size", "grad_accum", "weight_decay", "max_grad_norm",
        "gradient_checkpointing", "checkpoint_every")
    norm: Literal["l2", "l1"] = Field("l2", description="group penalty: l2 (group lasso) or l1")
    lam: float = Field(
        1.5, ge=0.0,
        description="proximal mode's strength, unit-free: the shrink alone removes LAM times each group's starting "
        "size by --reg-shrink-until (1: zero just then, 2: about halfway there)",
    )
    mode: Literal["proximal", "penalty"] = Field(
        "proximal", description="proximal: decoupled shrink to exact zero (lossless cut); penalty: the paper's "
        "group penalty added to the loss, then the cut of what remains")
    shrink_until: float = Field(
        1.0, gt=0.0, le=1.0, description="proximal mode: the fraction of the stage's steps by which LAM=1 reaches "
        "zero; the groups are held at zero afterwards, so the rest of the stage trains the smaller model")
    penalty_lam: float = Field(
        1e-3, ge=0.0, description="penalty mode: lambda of the paper's loss LM + lambda * sum of group norms "
        "(paper's optimum 1e-3)")
    steps: int = Field(144, ge=0, description="optimizer steps (one pass over the 144 regularization windows of the default draw)")
    warmup_steps: int = Field(4, ge=0, description="linear warm-up steps (capped at the stage's steps)")
