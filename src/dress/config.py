"""Typed configuration, one model per stage, shared by the CLI and the Python API.

Unknown keys are errors (``extra="forbid"``). The resolved :class:`PruneConfig` is saved in every
output's ``dress.json``, so a run can be repeated from its record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dress.methods.llm_surgeon.config import LLMSurgeonConfig

# Every method name the CLI accepts; each is implemented in dress.methods (see METHODS there).
Method = Literal["direct", "dress", "fpr", "slicegpt", "sleb", "shortgpt", "trsp", "llm-surgeon"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Calibration draw: ``samples`` windows of ``seq_len`` tokens from ``calib``, split
    ``split`` (regularization:recovery) along the sample axis."""

    calib: str = "wiki"
    samples: int = Field(192, ge=1)
    seq_len: int = Field(256, ge=8)
    split: str = "3:1"
    seed: int = 0


class RegularizeConfig(_Strict):
    """Stage 2 of DReSS: train all parameters on the regularization part while a group penalty
    drives the removed channels' groups to zero. ``lam`` is unit-free (see :mod:`dress.regularize`):
    over the run the penalty alone removes ``lam`` times each group's starting size, so ``lam=1``
    reaches zero at the last step and ``lam=2`` about halfway."""

    norm: Literal["l2", "l1"] = "l2"
    lam: float = Field(1.5, ge=0.0)
    steps: int = Field(144, ge=0)  # one pass over the 144 regularization windows of the default draw
    lr: float = Field(3e-4, gt=0.0)
    warmup_steps: int = Field(4, ge=0)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(0, ge=0)  # 0: only at the end of the stage


class RecoveryConfig(_Strict):
    """Stage 4: LoRA on the recovery part, merged into the weights (a plain checkpoint).
    ``mode="full"`` fine-tunes every parameter instead (no adapters; ``rank``, ``alpha``,
    ``dropout`` and ``targets`` are then unused): the strongest simple rival of DReSS is
    direct removal followed by full fine-tuning with the same budget."""

    enabled: bool = True
    mode: Literal["lora", "full"] = "lora"
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    steps: int = Field(48, ge=0)  # one pass over the 48 recovery windows of the default draw
    lr: float = Field(3e-4, gt=0.0)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)


class EvalConfig(_Strict):
    """Held-out perplexity of dense and pruned models, in the same run."""

    enabled: bool = True
    source: str = "wiki"
    seq_len: int = Field(512, ge=8)
    max_tokens: int | None = Field(32768, ge=1)  # None: the whole evaluation part
    batch_size: int = Field(4, ge=1)


class DepthConfig(_Strict):
    """Layer removal shared by ``sleb``, ``shortgpt`` and ``trsp``: how many layers, and how many
    calibration windows score them. By default the ratio picks the number of layers whose
    parameters come closest to it (see :func:`dress.pruning.layers.layers_for_ratio`)."""

    layers: int | None = Field(None, ge=1)  # remove exactly this many layers (overrides --ratio)
    score_samples: int | None = Field(16, ge=1)  # scoring windows (SLEB, ShortGPT); None: all (paper: 128 x 2048)
    batch_size: int = Field(4, ge=1)  # windows per scoring forward


class TRSPConfig(_Strict):
    """TRSP (arXiv 2505.18232), see :mod:`dress.methods.trsp`. Stage 1 learns one gate per layer
    with ``lam1 * sum|s_i|`` added to the LM loss; stage 2 trains all parameters with
    ``lam2 * sum_i mean_tokens ||y_i - x_i||^2 / ref_i`` added for the chosen layers (``ref_i``:
    the same mean at the start of stage 2, so ``lam2`` is unit-free); then they are removed.
    Weights train at ``lr``, gates at ``gate_lr``. Defaults measured on the bundled SmolLM2
    (docs/depth.md)."""

    lam1: float = Field(0.05, ge=0.0)
    steps1: int = Field(24, ge=0)
    train1: Literal["gates", "all"] = "gates"  # stage 1 trains only the gates, or every parameter
    lam2: float = Field(1.0, ge=0.0)
    steps2: int = Field(24, ge=0)
    shrink2: float = Field(1.5, ge=0.0)  # stage 2: proximal shrink of the chosen gates, in units of the run; 0: off
    lr: float = Field(1e-4, gt=0.0)
    gate_lr: float = Field(2e-2, ge=0.0)  # 0: gates frozen
    warmup_steps: int = Field(2, ge=0)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, gt=0.0)
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(0, ge=0)


class DistillConfig(_Strict):
    """Optional distillation from the dense model in every training stage (regularization,
    recovery, TRSP's stages): the loss is ``(1 - weight) * LM + weight * KL(dense || student)`` at
    ``temperature`` (see :mod:`dress.distill`). ``weight = 0`` (default) trains on the LM loss alone.
    It applies to every method alike, so a comparison stays fair."""

    weight: float = Field(0.0, ge=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0)


class PruneConfig(_Strict):
    model: str | None = None  # None: the bundled default (smollm2-135m)
    method: Method = "dress"
    ratio: float = Field(0.25, gt=0.0, lt=1.0)
    selection: Literal["last", "activation", "weight"] = "activation"
    data: DataConfig = DataConfig()
    regularize: RegularizeConfig = RegularizeConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    evaluate: EvalConfig = EvalConfig()
    depth: DepthConfig = DepthConfig()
    trsp: TRSPConfig = TRSPConfig()
    distill: DistillConfig = DistillConfig()
    llm_surgeon: LLMSurgeonConfig = LLMSurgeonConfig()
    device: str | None = None  # None: cuda if available, else cpu
    bf16: bool | None = None  # None: bf16 autocast on GPU, fp32 on CPU
    seed: int = 0

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        return float(value)
