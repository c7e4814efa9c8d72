"""Settings of ``--method llm-surgeon`` (the ``llm_surgeon`` block of a prune config)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from dress.config_base import StrictConfig


class LLMSurgeonConfig(StrictConfig):
    """LLM Surgeon, structured (van der Ouderaa et al., ICLR 2024), see
    :mod:`dress.methods.llm_surgeon`. CPU defaults; the official runs use 128 windows x 2048
    (4096 for LLaMA) tokens and 40 shots to 50% (20 shots to 25%): experiments/*.paper.yaml."""

    title: ClassVar[str] = "LLM Surgeon (llm-surgeon)"
    flag_prefix: ClassVar[str] = "surgeon-"

    shots: int = Field(5, ge=1, description="shots of the linear schedule; each re-estimates the curvature "
                       "(official: 40 shots to 50%, i.e. 1.25% per shot)")
    samples: int | None = Field(32, ge=1, description="calibration windows for the curvature (the first ones "
                                "of the regularization part; 'all': every one; official: 128)")
    batch_size: int = Field(1, ge=1, description="windows per curvature forward/backward (memory only)")
    damp_g: float = Field(0.01, ge=0.0, description="damping of G, relative to its mean diagonal")
    damp_a: float = Field(0.01, ge=0.0, description="damping of A, relative to its mean diagonal")
    update: Literal["sum", "sequential", "none"] = Field(
        "sum", description="weight update: sum of the row and column updates from the pre-shot weights "
        "(official default), sequential (rows, then columns; the joint optimum, official --addupdate), "
        "or none (zero only: K-OBD)")
    correlate: int = Field(0, ge=0, description="solve the chosen rows (columns) of a matrix jointly (0, "
                           "official default), one by one (1), or in chunks of k")
    target: Literal["params", "linear"] = Field(
        "params", description="what --ratio counts: params = zero ratio x all parameters of the model (the "
        "count a width or depth method removes at that ratio; all of it inside decoder linears); linear = "
        "the official definition, ratio of the decoder linear weights (biases included)")
    compact: bool = Field(True, description="physically remove dead FFN neurons and whole KV groups "
                          "(exact); the remaining zeros stay in place")
    eval_each_shot: bool = Field(True, description="log the held-out loss after every shot (8 windows)")
