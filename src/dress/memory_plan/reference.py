"""The reference table of docs/scale.md (``python -m dress.memory_plan``): Llama shapes from 1.1B to
70B under the paper's protocol (:data:`PAPER_RUN`), peak per GPU for each way to run."""

from __future__ import annotations

from dataclasses import replace

from dress.memory_plan.assumptions import GiB
from dress.memory_plan.settings import RunSettings
from dress.memory_plan.shapes import llama_shape
from dress.memory_plan.stages import node_host_bytes, peak, plan_stages
from dress.memory_plan.strategies import STRATEGY_LABELS

REFERENCE_SHAPES = (
    llama_shape("TinyLlama-1.1B", 2048, 5632, 22, 32, 4, dtype="bfloat16"),
    llama_shape("Llama-2-7B", 4096, 11008, 32, 32, 32),
    llama_shape("Llama-2-13B", 5120, 13824, 40, 40, 40),
    llama_shape("Llama-2-70B", 8192, 28672, 80, 64, 8),
)

PAPER_RUN = RunSettings(method="dress", ratio=0.25, train_batch=1, train_seq=2048, gradient_checkpointing=True,
                        rft_gradient_checkpointing=True, score_batch=4, eval_batch=4, eval_seq=2048, bf16=True,
                        device_type="cuda")


def markdown_table(run: RunSettings = PAPER_RUN, gpus: int = 8) -> str:
    """Peak GiB per GPU (host GiB of the node in parentheses) of the whole pipeline for each way to
    run, the paper's protocol (``PAPER_RUN``: bf16 autocast, gradient checkpointing, 1 x 2048
    micro-batch, evaluation 4 x 2048)."""
    columns = [("single", 1), ("ddp", gpus), ("fsdp2", gpus), ("fsdp2-offload", 1)]
    labels = [f"{STRATEGY_LABELS[s]}, {n} GPU{'s' if n > 1 else ''}" for s, n in columns]
    lines = ["| model | P | " + " | ".join(labels) + " | regularize, one process, no checkpointing |",
             "|" + "---|" * (len(labels) + 3)]
    for shape in REFERENCE_SHAPES:
        cells = []
        for strategy, n in columns:
            stages = plan_stages(shape, run, strategy, n)
            dev, _host = peak(stages)
            cells.append(f"{dev / GiB:.0f} ({node_host_bytes(stages, n) / GiB:.0f})")
        plain = {s.stage: s for s in plan_stages(shape, replace(run, gradient_checkpointing=False))}["regularize"]
        lines.append(f"| {shape.name} | {shape.params / 1e9:.2f}B | " + " | ".join(cells) + f" | {plain.device / GiB:.0f} |")
    return "\n".join(lines)
