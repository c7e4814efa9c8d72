"""What LLM Surgeon holds per stage (:class:`dress.memory_plan.MethodMemory`); names as :mod:`.method` records them.

One shot holds, beside the fp32 model: the K-FAC factors of every decoder linear in fp32 (the input
moments shared by q/k/v and by gate/up, one ``G`` per linear), then, while the costs are computed,
the damped inverses that replace them (the same size) and one linear's fp64 copies; the curvature
comes from a backward pass to the input embeddings (a training micro-batch's activations and logits,
no weight gradients). The removal of dead structures replaces one tensor at a time.
"""

from __future__ import annotations

from dress.memory_plan import (MethodMemory, ModelShape, RunSettings, StageMemory, activation_bytes, inference_bytes,
                               training_logits_bytes)


def shots_stage(shots: int) -> str:
    return f"LLM Surgeon ({shots} shots)"


COMPACT = "remove dead FFN neurons and KV groups"


def _settings(config) -> dict:
    cfg = config.llm_surgeon
    return {"train_batch": cfg.batch_size, "trains": False, "scores": False, "score_batch": cfg.batch_size,
            "method_detail": {"shots": cfg.shots, "eval_each_shot": cfg.eval_each_shot}}


def factor_bytes(shape: ModelShape) -> float:
    """fp32 K-FAC factors of every decoder linear of a Llama-shaped layer stack."""
    h, a, kv, i = shape.hidden, shape.attn_width, shape.kv_width, shape.intermediate
    moments = h * h + a * a + h * h + i * i  # inputs of q/k/v (shared), o, gate/up (shared), down
    outputs = a * a + 2 * kv * kv + h * h + 2 * i * i + h * h  # G of q, k, v, o, gate, up, down
    return 4.0 * shape.layers * (moments + outputs)


def _pruned(shape: ModelShape, run: RunSettings) -> ModelShape:
    # zeros stay in place except dead FFN neurons and KV groups: the saved model keeps most of its size;
    # the plan counts it whole (an upper bound for recovery and evaluation)
    return shape


def _stages(shape: ModelShape, small: ModelShape, run: RunSettings, strategy: str, n: int) -> list[StageMemory]:
    """A shot's peak is the larger of its curvature phase and its held-out evaluation (after the
    surgery, when the factors are gone)."""
    weights = {"weights": 4.0 * shape.params}
    h, i = shape.hidden, shape.intermediate
    factors = factor_bytes(shape)
    curvature = {**weights, "K-FAC factors (fp32)": factors,
                 "curvature backward": activation_bytes(shape, run.train_batch, run.train_seq, run.bf16, False)
                 + training_logits_bytes(shape, run.train_batch, run.train_seq, run.bf16),
                 "one linear in fp64": 3 * 8.0 * (i * i + h * h)}
    if run.device_type != "cuda":
        # the inverses are allocated while the factors are freed one by one; glibc keeps the freed
        # blocks (below its mmap threshold) in its heap, so the process holds both (measured, docs/scale.md)
        curvature["allocator retention"] = factors
    detail = run.method_detail or {}
    evaluation = {**weights, "evaluation (each shot)": inference_bytes(shape, run.eval_batch, run.eval_seq)}
    use_eval = detail.get("eval_each_shot") and sum(evaluation.values()) > sum(curvature.values())
    return [StageMemory(shots_stage(detail.get("shots", 1)), evaluation if use_eval else curvature),
            StageMemory(COMPACT, {**weights, "one new tensor": 4.0 * shape.intermediate * shape.hidden})]


MEMORY = MethodMemory(settings=_settings, pruned=_pruned, stages=_stages)
