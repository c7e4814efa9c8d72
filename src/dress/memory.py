"""Expected training memory of the regularization stage (every parameter trains, AdamW), per GPU
and per node, for the settings docs/scale.md describes. ``python -m dress.memory`` prints the
table that docs/scale.md shows.

The formula (bytes; ``P`` parameters, ``N`` GPUs, ``s`` tokens per sample, ``b`` samples per GPU
micro-batch, ``h`` hidden size, ``n`` layers, ``V`` vocabulary):

  model states   weights 4P + gradients 4P + AdamW moments 8P = 16P    (fp32 master weights: dress
                 keeps fp32 parameters and autocasts to bf16, so bf16 does not shrink this term)
  activations    A = n * 34 s b h  bytes in bf16 (Korthikanti et al. 2022, with flash/SDPA attention,
                 no s^2 term), 2A in fp32; with gradient checkpointing only each layer's input is kept,
                 n * 4 s b h (fp32 residual stream), plus one layer's 34 s b h during its recompute
  logits         8 s b V   (fp32 logits and their gradient)
  sharding       FSDP over N GPUs: 16P / N, plus two gathered bf16 layers (2 * 2 * P / n) in flight;
                 FSDP with CPU offload (one GPU): only the gathered layers on the GPU, 16P in host memory;
                 ZeRO-3 with the optimizer on the CPU: bf16 weights + bf16 gradients 4P / N on the GPU,
                 fp32 master + moments + fp32 gradients 16P in host memory (the whole node)
  dress's copy   one fp32 replica per process between training stages (4P each, on its GPU for channel
                 selection, removal and evaluation; in host memory while a sharded stage trains)

These are estimates (allocator slack, CUDA context ~0.5 GB and temporary buffers are not counted);
the measured peak of a run is in its ``dress.json`` under ``stages``.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Shape:
    name: str
    params: float  # P
    hidden: int  # h
    layers: int  # n
    vocab: int  # V


# LLaMA-family shapes (TinyLlama-1.1B for "1B"; LLaMA-2 7B/13B/70B).
SHAPES = (
    Shape("1B (TinyLlama-1.1B)", 1.10e9, 2048, 22, 32000),
    Shape("7B (LLaMA-2-7B)", 6.74e9, 4096, 32, 32000),
    Shape("13B (LLaMA-2-13B)", 13.0e9, 5120, 40, 32000),
    Shape("70B (LLaMA-2-70B)", 69.0e9, 8192, 80, 32000),
)

SETTINGS = (
    ("fp32, 1 GPU", "fp32"),
    ("bf16 autocast, 1 GPU", "bf16"),
    ("bf16 + grad. ckpt, 1 GPU", "ckpt"),
    ("FSDP-1 + CPU offload, 1 GPU (bf16, ckpt)", "fsdp1_offload"),
    ("FSDP-8 (bf16, ckpt)", "fsdp8"),
    ("ZeRO-3 + CPU optimizer, 8 GPUs (bf16, ckpt)", "zero3"),
)


def activations(shape: Shape, seq: int, batch: int, setting: str) -> float:
    """Activation and logit bytes of one micro-batch on one GPU."""
    per_layer = 34 * seq * batch * shape.hidden
    logits = 8 * seq * batch * shape.vocab
    if setting == "fp32":
        return 2 * shape.layers * per_layer + logits
    if setting == "bf16":
        return shape.layers * per_layer + logits
    return shape.layers * 4 * seq * batch * shape.hidden + per_layer + logits  # checkpointed


def gpu_bytes(shape: Shape, setting: str, seq: int = 2048, batch: int = 1, gpus: int = 8) -> float:
    """Peak GPU bytes of the regularization stage per GPU (module docstring)."""
    p = shape.params
    act = activations(shape, seq, batch, setting)
    if setting in ("fp32", "bf16", "ckpt"):
        return 16 * p + act
    gathered = 2 * 2 * p / shape.layers  # two bf16 layers in flight (current + prefetched)
    if setting == "fsdp1_offload":
        return gathered + act
    if setting == "fsdp8":
        return 16 * p / gpus + gathered + act
    if setting == "zero3":
        return 4 * p / gpus + gathered + act
    raise ValueError(setting)


def host_bytes(shape: Shape, setting: str, gpus: int = 8) -> float:
    """Host (CPU) bytes of the whole node: dress's fp32 replica per process, plus ZeRO's offload."""
    processes = 1 if setting in ("fp32", "bf16", "ckpt", "fsdp1_offload") else gpus
    replicas = 4 * shape.params * processes
    return replicas + (16 * shape.params if setting in ("zero3", "fsdp1_offload") else 0.0)


def markdown_table(seq: int = 2048, batch: int = 1, gpus: int = 8) -> str:
    """GPU memory per GPU (host memory of the node in parentheses), GB, one row per model; the
    last column is the fp32 model each GPU holds outside training (selection, removal, evaluation)."""
    labels = [label for label, _ in SETTINGS] + ["outside training, any setting"]
    lines = ["| model | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for shape in SHAPES:
        cells = [f"{gpu_bytes(shape, key, seq, batch, gpus) / GB:.0f} ({host_bytes(shape, key, gpus) / GB:.0f})"
                 for _, key in SETTINGS]
        cells.append(f"{4 * shape.params / GB:.0f}")
        lines.append(f"| {shape.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
