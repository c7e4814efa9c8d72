"""Per-stage peak memory of one process: :class:`StageMemory` and :func:`plan_stages`, the stages of
``dress prune`` in order (the method's own from :class:`~dress.memory_plan.method.MethodMemory`),
each a dict of named terms on the device and in host memory. Pure: nothing allocates a tensor."""

from __future__ import annotations

from dataclasses import dataclass, field

from dress.memory_plan.assumptions import CPU_OVERHEAD, CUDA_CONTEXT, TOKENIZER_BYTES_PER_TOKEN
from dress.memory_plan.method import method_memory
from dress.memory_plan.pruned import pruned_shape
from dress.memory_plan.settings import RunSettings
from dress.memory_plan.shapes import ModelShape
from dress.memory_plan.strategies import STRATEGIES
from dress.memory_plan.terms import activation_bytes, dtype_bytes, inference_bytes, lora_params, training_logits_bytes


@dataclass
class StageMemory:
    """Peak bytes of one stage in one process: ``device`` (on a GPU, or host RAM on CPU) and
    ``host`` (host RAM beside a GPU: offloaded state, the waiting replica). ``parts`` names each term."""

    stage: str
    parts: dict[str, float] = field(default_factory=dict)
    host_parts: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> float:
        return sum(self.parts.values())

    @property
    def host(self) -> float:
        return sum(self.host_parts.values())


def training_stage(name: str, shape: ModelShape, run: RunSettings, strategy: str, n: int, *, full: bool,
                    batch: int, checkpointing: bool) -> StageMemory:
    """A training stage: ``full`` (every parameter: regularization, full recovery, TRSP) or LoRA."""
    p = shape.params
    cuda = run.device_type == "cuda"
    stage = StageMemory(name)
    act = activation_bytes(shape, batch, run.train_seq, run.bf16, checkpointing)
    logits = training_logits_bytes(shape, batch, run.train_seq, run.bf16)
    teacher = 0.0
    if run.distill:
        teacher = (2 if run.bf16 else 4) * p + batch * run.train_seq * shape.vocab * (2 if run.bf16 else 4)
    sharded = strategy in ("fsdp2", "fsdp2-offload")
    table = 4.0 * shape.vocab * shape.hidden  # the largest tensor: the embedding (or head) table
    if not full:  # LoRA: frozen base, small adapters; activations pass through every layer
        lp = lora_params(shape, run.lora_rank)
        act += 2 * batch * run.train_seq * 4 * (shape.hidden + shape.intermediate)
        # bf16 autocast casts every frozen weight again each forward and saves the bf16 copy for the
        # input gradient, so a step holds a bf16 copy of the model (2P), as full training's cast cache
        # does; with checkpointing only the recomputed layer's copies and the head's are held at once
        casts = 2 * (shape.layer_params + shape.vocab * shape.hidden) if checkpointing else 2 * p
        stage.parts.update(weights=4 * p + 4 * lp + (casts if run.bf16 else 0), gradients=4 * lp, optimizer=8 * lp)
    elif not sharded:
        stage.parts["weights"] = 4 * p + (2 * p if run.bf16 else 0)  # + autocast's cached bf16 casts
        stage.parts["gradients"] = 4 * p + (4 * p if strategy == "ddp" else 0) + (table if shape.tied else 0)
        # AdamW's temporaries: the foreach step's sqrt buffer over every tensor on CUDA, one tensor on CPU
        stage.parts["optimizer"] = 8 * p + (4 * p if cuda else table)
    else:
        gathered = 2 * 2 * shape.layer_params + 2 * shape.embed_params / n  # two bf16 layers in flight
        if strategy == "fsdp2":
            stage.parts["weights"] = 4 * p / n + gathered
            stage.parts["gradients"] = 4 * p / n + 4 * shape.layer_params
            stage.parts["optimizer"] = 8 * p / n + (4 * p / n if cuda else 0)
        else:  # fsdp2-offload
            stage.parts["weights"] = gathered
            stage.parts["gradients"] = 4 * shape.layer_params
            stage.host_parts["training state (offloaded)"] = 16 * p / n
        stage.host_parts["model replica (waiting)"] = 4 * p
    stage.parts["activations"] = act
    stage.parts["logits"] = logits
    if teacher:
        stage.parts["teacher"] = teacher
    if not cuda:
        stage.parts["allocator retention"] = act
    return stage


def plan_stages(shape: ModelShape, run: RunSettings, strategy: str = "single", processes: int = 1) -> list[StageMemory]:
    """Per-stage peak of one process (:mod:`dress.memory_plan`), in pipeline order; names match ``dress.json``."""
    if strategy not in STRATEGIES:
        raise ValueError(strategy)
    n = max(processes, 1)
    p = shape.params
    small = pruned_shape(shape, run)
    stages: list[StageMemory] = []
    w = {"weights": 4.0 * p}
    # a cast (fp16/bf16 -> fp32), the copy to the GPU, or on CPU the copy out of the file's memory map
    # (dress.pipeline._own_memory) makes every weight resident
    file_pages = float(dtype_bytes(shape.source_dtype) * p)  # the mapped checkpoint, read while it is copied
    stages.append(StageMemory("load model", dict(w), {"checkpoint file pages": file_pages}))
    if run.eval_enabled:
        stages.append(StageMemory("evaluate dense", {**w, "evaluation": inference_bytes(shape, run.eval_batch, run.eval_seq)}))
    stages += method_memory(run.method).stages(shape, small, run, strategy, n)
    if run.rft:
        name = f"recover ({run.rft_mode})"
        stages.append(training_stage(name, small, run, strategy, n, full=run.rft_mode == "full", batch=run.rft_batch,
                                      checkpointing=run.rft_gradient_checkpointing))
    if run.eval_enabled:
        stages.append(StageMemory("evaluate pruned", {"weights": 4.0 * small.params,
                                                      "evaluation": inference_bytes(small, run.eval_batch, run.eval_seq)}))
    save_bytes = run.save_bytes or dtype_bytes(shape.source_dtype)
    # the model moves to host memory before it is written; a cast to the saved dtype copies it
    stages.append(StageMemory("save", {}, {"weights": 4.0 * small.params,
                                           "cast copy": save_bytes * small.params if save_bytes != 4 else 0.0}))
    overhead = CUDA_CONTEXT if run.device_type == "cuda" else CPU_OVERHEAD + TOKENIZER_BYTES_PER_TOKEN * shape.vocab
    for st in stages:
        if run.device_type == "cuda":
            st.parts["CUDA context"] = overhead
            st.host_parts["process"] = CPU_OVERHEAD + TOKENIZER_BYTES_PER_TOKEN * shape.vocab
        else:  # on CPU the device *is* host memory: fold host terms in
            st.parts.update(st.host_parts)
            st.host_parts = {}
            st.parts["process"] = overhead
    return stages


def node_host_bytes(stages: list[StageMemory], processes: int) -> float:
    """Host memory of the node: every process holds a stage's host terms at once, except ``save``,
    which only the main process runs (the others hold their process overhead meanwhile)."""
    worst = 0.0
    for st in stages:
        if st.stage == "save":
            total = st.host + (processes - 1) * st.host_parts.get("process", 0.0)
        else:
            total = st.host * processes
        worst = max(worst, total)
    return worst


def peak(stages: list[StageMemory]) -> tuple[float, float]:
    """``(device peak, host peak)`` over the stages of one process."""
    return max(s.device for s in stages), max((s.host for s in stages), default=0.0)
