"""The byte counts of single terms (activations, training logits, a no-grad forward, LoRA
adapters, a dtype's width): pure functions of a shape and a batch; the formulas are stated in
:mod:`dress.memory_plan`."""

from __future__ import annotations

from dress.memory_plan.shapes import ModelShape


def activation_bytes(shape: ModelShape, batch: int, seq: int, bf16: bool, checkpointing: bool) -> float:
    """Tensors saved for backward by the decoder layers of one micro-batch (:mod:`dress.memory_plan`)."""
    tokens = batch * seq
    norm_elems = 2 * shape.norms_per_layer * shape.hidden
    other_elems = 5 * shape.attn_width + 2 * shape.kv_width + 4 * shape.intermediate
    per_layer = tokens * (4 * norm_elems + (2 if bf16 else 4) * other_elems)
    if checkpointing:
        return shape.layers * tokens * shape.hidden * 4 + per_layer
    return shape.layers * per_layer


def training_logits_bytes(shape: ModelShape, batch: int, seq: int, bf16: bool) -> float:
    """Logits of a training micro-batch: output (+ fp32 upcast under bf16), log-softmax, two gradients."""
    n = batch * seq * shape.vocab
    return n * (2 + 4 if bf16 else 4) + 3 * 4 * n


def inference_bytes(shape: ModelShape, batch: int, seq: int) -> float:
    """A no-grad forward of ``batch x seq`` (evaluation, scoring): fp32 logits, one window's
    cross-entropy buffers, one layer's largest transient (MLP)."""
    tokens = batch * seq
    return 4 * (tokens * shape.vocab + 2 * seq * shape.vocab + tokens * (3 * shape.intermediate + 4 * shape.hidden))


def lora_params(shape: ModelShape, rank: int) -> float:
    """q, k, v, o, gate, up, down adapters: rank x (in + out) each."""
    h, a, kv, i = shape.hidden, shape.attn_width, shape.kv_width, shape.intermediate
    return shape.layers * rank * ((h + a) + 2 * (h + kv) + (a + h) + 2 * (h + i) + (i + h))


def dtype_bytes(name: str) -> int:
    """Bytes per element of a checkpoint dtype name: 2 for the half types, else 4."""
    return 2 if name in ("bfloat16", "float16", "bf16", "fp16") else 4
