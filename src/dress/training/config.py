"""One config for every stage that trains (DReSS regularization, recovery, TRSP's two stages, and
any method's own fine-tuning), so each exposes the same options under its own flag prefix.

:class:`TrainingConfig` holds the loop's settings; a stage subclasses it, adds its step count(s)
and its own knobs, and may change the defaults. :meth:`TrainingConfig.settings` turns it into the
plain :class:`TrainSettings` the loop (:mod:`dress.training.loop`) runs with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from dress.config_base import StrictConfig, flag


class TrainingConfig(StrictConfig):
    """AdamW (betas 0.9/0.95), linear warm-up then cosine decay to 10% of ``lr``."""

    lr: float = Field(3e-4, gt=0.0, description="peak learning rate")
    warmup_steps: int = Field(2, ge=0, description="linear warm-up steps (capped at the stage's steps)")
    batch_size: int = Field(1, ge=1, description="windows per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping norm")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory, ~30% slower)")
    checkpoint_every: int = Field(0, ge=0, description="write a resumable checkpoint every K steps (0: only at the end of the stage)")

    def settings(self, steps: int, *, seed: int, bf16: bool, desc: str) -> TrainSettings:
        return TrainSettings(
            steps=steps, lr=self.lr, warmup_steps=min(self.warmup_steps, steps), batch_size=self.batch_size,
            grad_accum=self.grad_accum, weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm,
            seed=seed, bf16=bf16, gradient_checkpointing=self.gradient_checkpointing,
            checkpoint_every=self.checkpoint_every, desc=desc,
        )


@dataclass
class TrainSettings:
    """What one call of :func:`dress.training.loop.train` runs with (resolved from a stage config)."""

    steps: int
    lr: float
    warmup_steps: int = 0
    batch_size: int = 1
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0
    desc: str = "train"


class RecoveryConfig(TrainingConfig):
    """Recovery fine-tuning after removal: LoRA on the recovery part, merged into the weights (a
    plain checkpoint). ``mode="full"`` fine-tunes every parameter instead (no adapters; ``rank``,
    ``alpha``, ``dropout`` and ``targets`` are then unused): the strongest simple rival of DReSS is
    direct removal followed by full fine-tuning with the same budget."""

    title: ClassVar[str] = "recovery fine-tuning (LoRA or full)"
    flag_prefix: ClassVar[str] = "rft-"
    enabled: bool = Field(True, description="run recovery fine-tuning after removal", json_schema_extra=flag("--rft"))
    mode: Literal["lora", "full"] = Field("lora", description="lora (merged after training) or full fine-tuning of every parameter")
    rank: int = Field(8, ge=1, description="LoRA rank", json_schema_extra=flag("--lora-rank"))
    alpha: float = Field(16.0, gt=0.0, description="LoRA alpha", json_schema_extra=flag("--lora-alpha"))
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout", json_schema_extra=flag("--lora-dropout"))
    targets: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="LoRA target modules, comma-separated (Llama names; other families' equivalents are mapped)",
        json_schema_extra=flag("--lora-targets"),
    )
    steps: int = Field(48, ge=0, description="optimizer steps (one pass over the 48 recovery windows of the default draw)")
