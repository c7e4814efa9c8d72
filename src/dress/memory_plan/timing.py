"""The training-time estimate of a plan: FLOPs over the stated throughput, plus host traffic and the
host AdamW step under CPU offload (:mod:`dress.memory_plan.assumptions`). CUDA only; pure."""

from __future__ import annotations

import math

from dress.memory_plan.assumptions import CPU_ADAM_PARAMS_PER_S, GPU_TFLOPS, PCIE_GBPS
from dress.memory_plan.pruned import pruned_shape
from dress.memory_plan.settings import RunSettings
from dress.memory_plan.shapes import ModelShape


def estimate_seconds(shape: ModelShape, run: RunSettings, strategy: str, n: int, steps: int, global_batch: int,
                     rft_steps: int = 0) -> float:
    """Training time of regularization + recovery on CUDA under the stated throughput assumptions
    (:data:`GPU_TFLOPS`, :data:`PCIE_GBPS`, :data:`CPU_ADAM_PARAMS_PER_S`): ``6 P T`` FLOPs
    (``8 P T`` with checkpointing), spread over ``n`` GPUs; CPU offload adds the weight traffic
    over PCIe (every micro-batch: forward, backward, and the recompute) and the host AdamW step."""
    tflops = GPU_TFLOPS["bf16" if run.bf16 else "fp32"] * 1e12
    flops_per_token = (8 if run.gradient_checkpointing else 6) * shape.params
    tokens = steps * global_batch * run.train_seq
    small = pruned_shape(shape, run)
    rft_tokens = rft_steps * global_batch * run.train_seq
    seconds = (flops_per_token * tokens + 6 * small.params * rft_tokens) / (tflops * n)
    if strategy == "fsdp2-offload" and steps:
        micro_per_rank = max(1, math.ceil(global_batch / (n * max(run.train_batch, 1))))
        passes = 3 if run.gradient_checkpointing else 2
        bytes_per_pass = 2 * shape.params  # bf16 weights in; FSDP moves gradients out at a similar size
        seconds += steps * micro_per_rank * passes * bytes_per_pass / (PCIE_GBPS * 1e9)
        seconds += steps * shape.params / (CPU_ADAM_PARAMS_PER_S * n)
    return seconds
