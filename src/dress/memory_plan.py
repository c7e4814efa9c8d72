"""The memory plan: what each stage of ``dress prune`` holds, per process, before any weight loads.

Contract: everything here is a pure function of a :class:`ModelShape` (read from the model's
config alone, see :func:`load_shape`) and a :class:`RunSettings` (read from a
:class:`~dress.config.PruneConfig`); nothing allocates a tensor. ``dress plan`` prints it, and
``dress prune`` runs the same check before loading and refuses when the peak exceeds the memory
it can see (``--skip-memory-check`` overrides). ``benchmarks/bench_memory_plan.py`` holds the
prediction against the measured per-stage peak (docs/scale.md).

Terms, in bytes (``P`` parameters, ``N`` processes, ``b x s`` the micro-batch, ``V`` the vocabulary):

* **weights** dress keeps fp32 master weights everywhere (4P); ``--bf16`` is bf16 *autocast*, whose
  cast copies of the trained weights are cached for a training forward (+2P while a stage trains).
* **gradients** 4P; **optimizer** AdamW moments 8P (+4P transient on CUDA: the foreach step's
  ``sqrt`` buffer); DDP adds its gradient buckets (4P).
* **activations** saved for backward, per layer and token in elements: ``2 n_norm h`` (norm inputs
  and outputs) + ``5 a + 2 kv`` (q, k, v before and after RoPE, GQA's expanded k and v, the
  attention output; ``a`` = heads x head_dim, ``kv`` = kv-heads x head_dim) + ``4 i`` (gate, up,
  the activation and the product; ``i`` the MLP width); norms at 4 bytes, the rest at 2 bytes under
  bf16 autocast and 4 bytes in fp32. Gradient checkpointing keeps each layer's input (4 h bytes per
  token) plus one layer recomputed.
* **logits** of a training micro-batch: the ``b s V`` logits, their fp32 upcast (bf16), the
  log-softmax kept by the loss and two gradients of that size.
* **evaluation / scoring** (no grad): the ``b s V`` fp32 logits plus one window's cross-entropy
  buffers (``2 s V``) plus one layer's transient.
* **teacher** (``--distill``): a frozen bf16 copy under ``--bf16`` (2P), fp32 otherwise (4P), and
  its logits.
* **sharding** FSDP2 over N: 16P/N + two gathered bf16 layers; FSDP2 with CPU offload (the path
  for ZeRO-3-sized runs): the gathered layers on the GPU, the 16P training state in host memory.
  Outside training every process
  keeps the whole fp32 model on its device (selection, removal, evaluation); while a sharded stage
  trains, that copy waits in host memory.
* **overhead** the process itself: Python, torch and transformers in host memory
  (:data:`CPU_OVERHEAD`), the tokenizer (:data:`TOKENIZER_BYTES_PER_TOKEN` per vocabulary entry),
  the CUDA context on a GPU (:data:`CUDA_CONTEXT`).
* **step temporaries** the AdamW step makes a temporary the size of the largest tensor (the
  embedding table, 4 V h); a tied embedding adds its second gradient (4 V h) before the two sum.
* **removal** replaces one tensor at a time: the model plus its largest new tensor. Every stage
  starts with ``gc.collect()`` (:mod:`dress.memory_meter`), so an earlier stage's objects caught in
  reference cycles (the optimizer, hooks) are gone before the next one allocates.

* **allocator retention** (CPU only): glibc raises its mmap threshold each time a large block is
  freed, so from the second training step on the activations come from its heap, which keeps freed
  blocks for reuse; a training stage's resident memory then holds about one more set of activations
  than is live (measured: +0.31 GiB over 12 LoRA steps of 256 tokens on SmolLM2, where the
  activations are 0.32 GiB; ``benchmarks/bench_allocator.py``). ``MALLOC_MMAP_THRESHOLD_=131072``
  removes it at 1.6x the time per step. CUDA's caching allocator is outside
  ``max_memory_allocated``; its fragmentation is what :data:`FIT_MARGIN` is for.

Not counted: the calibration tokens (a few MB) and the input file's page cache while loading.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

GiB = 2**30
CPU_OVERHEAD = 0.45 * GiB  # python + torch + transformers + tokenizer, measured RSS before loading (2-core CPU)
CUDA_CONTEXT = 0.6 * GiB  # CUDA context + cuBLAS workspace, outside torch's allocator
TOKENIZER_BYTES_PER_TOKEN = 1800  # a fast tokenizer's resident size per vocabulary entry (measured: SmolLM2 49K, Gemma3 262K)
FIT_MARGIN = 0.90  # a plan fits when its peak is at most 90% of the memory (fragmentation, spikes)

# Throughput assumptions of the time estimate (state them wherever a time is quoted).
GPU_TFLOPS = {"bf16": 300.0, "fp32": 40.0}  # effective TFLOP/s of one H100-class GPU: ~30% of its 989 dense bf16 peak
PCIE_GBPS = 20.0  # host <-> device, GB/s, per GPU (CPU offload moves the weights every forward/backward)
CPU_ADAM_PARAMS_PER_S = 1.0e9  # AdamW parameters per second on the host (CPU offload steps there)

STRATEGIES = ("single", "ddp", "fsdp2", "fsdp2-offload")
STRATEGY_LABELS = {
    "single": "one process",
    "ddp": "DDP",
    "fsdp2": "FSDP2",
    "fsdp2-offload": "FSDP2 + CPU offload",
}


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs from a model's config (see :func:`shape_from_config`)."""

    name: str
    model_type: str
    params: int  # P, tied weights counted once
    embed_params: int  # token (and positional) embeddings
    hidden: int  # h
    layers: int  # n
    vocab: int  # V
    intermediate: int  # i, the MLP width
    attn_width: int  # a = heads * head_dim
    kv_width: int  # kv-heads * head_dim
    norms_per_layer: int = 2
    tied: bool = True
    heads: int = 1  # attention heads: a stock config's width must be a multiple of it
    one_layer: int = 0  # parameters of one decoder layer (0: estimated from the rest)
    source_dtype: str = "float32"  # dtype of the checkpoint on disk (config's dtype)

    @property
    def layer_params(self) -> float:
        """Parameters of one decoder layer (the final norm and an untied head are not in a layer)."""
        if self.one_layer:
            return float(self.one_layer)
        return (self.params - self.embed_params) / max(self.layers, 1)

    @property
    def layer_params_per_channel(self) -> int:
        """Parameters of one decoder layer that one hidden channel touches (reader columns, writer
        rows, norm entries)."""
        return 2 * self.attn_width + 2 * self.kv_width + 3 * self.intermediate + self.norms_per_layer

    @property
    def params_per_channel(self) -> int:
        """Parameters one hidden channel touches (embedding and head columns, each layer's reader
        columns and writer rows, the norms' entries): what removing one channel removes."""
        return self.vocab * (1 if self.tied else 2) + self.layers * self.layer_params_per_channel + 1


@dataclass(frozen=True)
class RunSettings:
    """The settings of a run that move memory (see :func:`settings_from_config`)."""

    method: str = "dress"
    ratio: float = 0.25
    width_multiple: int = 32
    # decided by the method (its MethodMemory.settings): its training stage and its scoring forward
    train_batch: int = 1  # micro-batch per process
    train_seq: int = 256
    trains: bool = True  # regularization / TRSP stages train every parameter
    gradient_checkpointing: bool = False
    score_batch: int = 4
    scores: bool = True  # a scoring forward over the calibration windows (channel or layer choice)
    eval_enabled: bool = True
    eval_batch: int = 4
    eval_seq: int = 512
    rft: bool = True
    rft_mode: str = "lora"
    rft_batch: int = 1
    lora_rank: int = 8
    rft_gradient_checkpointing: bool = False
    bf16: bool = False
    distill: bool = False
    device_type: str = "cpu"
    save_bytes: int = 4  # bytes per parameter of the saved output
    method_detail: dict | None = None  # anything else a method's own plan reads (LLM Surgeon: shots)


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


# ---------------------------------------------------------------------------------------------
# model shape from the config alone


def shape_from_config(config, name: str = "") -> ModelShape:
    """Count parameters on the meta device (no memory) and read the widths from ``config``."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = getattr(config, "text_config", None) or config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    embed = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    from dress.adapters import adapter_for, parameter_count

    one_layer = parameter_count(adapter_for(model).decoder_layers(model)[0])
    h = int(cfg.hidden_size)
    heads = int(getattr(cfg, "num_attention_heads", 1))
    head_dim = int(getattr(cfg, "head_dim", None) or h // heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    inter = int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "ffn_dim", None) or 4 * h)
    norms = 4 if cfg.model_type.startswith("gemma") else 2
    dtype = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or "float32"
    return ModelShape(
        name=name or getattr(cfg, "_name_or_path", "") or cfg.model_type,
        model_type=cfg.model_type, params=int(params), embed_params=int(embed), hidden=h,
        layers=int(cfg.num_hidden_layers), vocab=int(cfg.vocab_size), intermediate=inter,
        attn_width=heads * head_dim, kv_width=kv_heads * head_dim, norms_per_layer=norms,
        tied=bool(getattr(cfg, "tie_word_embeddings", False)), source_dtype=str(dtype).removeprefix("torch."),
        heads=heads, one_layer=int(one_layer),
    )


def load_shape(spec: str | None) -> ModelShape:
    """The shape of a bundled name, local folder or hub id, from its ``config.json`` only."""
    from transformers import AutoConfig

    from dress.errors import DressError
    from dress.io.loading import check_supported_architecture, resolve_model_path

    source, path = resolve_model_path(spec)
    if path is not None:
        check_supported_architecture(spec)  # a broken config.json or an unsupported family: the loader's own message
    try:
        config = AutoConfig.from_pretrained(str(path) if path is not None else source)
    except (OSError, ValueError) as err:
        raise DressError(f"cannot read the config of {source!r}: {err}") from None
    return shape_from_config(config, source)


def settings_from_config(config, device_type: str) -> RunSettings:
    """The memory-relevant settings of a :class:`~dress.config.PruneConfig` on ``device_type``: the
    common ones here, the method's own (its training stage, its scoring) from its folder."""
    bf16 = config.bf16 if config.bf16 is not None else device_type == "cuda"
    save = getattr(config, "save_dtype", "source")
    return RunSettings(
        method=config.method, ratio=config.ratio, width_multiple=config.width_multiple,
        train_seq=config.data.seq_len,
        eval_enabled=config.evaluate.enabled, eval_batch=config.evaluate.batch_size, eval_seq=config.evaluate.seq_len,
        rft=config.recovery.enabled and config.recovery.steps > 0, rft_mode=config.recovery.mode,
        rft_batch=config.recovery.batch_size, lora_rank=config.recovery.rank,
        rft_gradient_checkpointing=config.recovery.gradient_checkpointing,
        bf16=bool(bf16), distill=config.distill.weight > 0, device_type=device_type,
        save_bytes={"fp32": 4, "bf16": 2, "fp16": 2}.get(save, 0),
        **method_memory(config.method).settings(config),
    )


@dataclass(frozen=True)
class MethodMemory:
    """What a method tells the plan, declared in its folder (``MethodSpec.memory``):

    * ``settings(config)``: the :class:`RunSettings` fields it decides (``train_batch``, ``trains``,
      ``gradient_checkpointing``, ``score_batch``, ``scores``);
    * ``pruned(shape, run)``: the model it outputs, by the rule its cut uses;
    * ``stages(shape, small, run, strategy, n)``: its own stages between the dense evaluation and
      recovery, named as the run records them (``weights`` of the dense model included)."""

    settings: Callable[[Any], dict]
    pruned: Callable[["ModelShape", "RunSettings"], "ModelShape"]
    stages: Callable[..., list]


def method_memory(name: str) -> MethodMemory:
    from dress.methods import get

    return get(name).memory_terms()


# ---------------------------------------------------------------------------------------------
# the terms


def pruned_shape(shape: ModelShape, run: RunSettings) -> ModelShape:
    """The model after removal, as the method's own rule makes it (:class:`MethodMemory`)."""
    return method_memory(run.method).pruned(shape, run)


def narrower(shape: ModelShape, width: int, extra: int = 0) -> ModelShape:
    """``shape`` with hidden width ``width`` (``extra`` parameters added back: SliceGPT's shortcuts)."""
    removed = shape.hidden - width
    embed = shape.embed_params - removed * shape.vocab  # the token embedding table loses a column per channel
    one_layer = shape.one_layer - removed * shape.layer_params_per_channel if shape.one_layer else 0
    return replace(shape, hidden=width, params=int(shape.params - removed * shape.params_per_channel + extra),
                   embed_params=int(embed), one_layer=one_layer)


def shorter(shape: ModelShape, layers_removed: int) -> ModelShape:
    """``shape`` without ``layers_removed`` decoder layers (layers are alike)."""
    return replace(shape, layers=shape.layers - layers_removed,
                   params=int(shape.params - layers_removed * shape.layer_params))


def width_for(shape: ModelShape, run: RunSettings) -> int:
    """The hidden width a width method keeps at ``run.ratio``: the cut's own rule
    (:func:`dress.pruning.widths.choose_width`)."""
    from dress.pruning.widths import choose_width

    if run.ratio <= 0.0:  # nothing removed (a plan of the dense shape)
        return shape.hidden
    return choose_width(shape.hidden, run.ratio, shape.heads, run.width_multiple).width


def layers_for(shape: ModelShape, ratio: float) -> int:
    """Layers a depth method removes at ``ratio`` of the parameters: the nearest count, ties to fewer
    (:func:`dress.pruning.layers.layers_for_ratio`'s rule), at least one removed and one kept."""
    return min(range(1, max(shape.layers, 2)), key=lambda k: (abs(k * shape.layer_params / shape.params - ratio), k))


def activation_bytes(shape: ModelShape, batch: int, seq: int, bf16: bool, checkpointing: bool) -> float:
    """Tensors saved for backward by the decoder layers of one micro-batch (module docstring)."""
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


# ---------------------------------------------------------------------------------------------
# the plan


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
    """Per-stage peak of one process (module docstring), in pipeline order; names match ``dress.json``."""
    if strategy not in STRATEGIES:
        raise ValueError(strategy)
    n = max(processes, 1)
    p = shape.params
    small = pruned_shape(shape, run)
    stages: list[StageMemory] = []
    w = {"weights": 4.0 * p}
    # a cast (fp16/bf16 -> fp32), the copy to the GPU, or on CPU the copy out of the file's memory map
    # (dress.pipeline._own_memory) makes every weight resident
    file_pages = float(_dtype_bytes(shape.source_dtype) * p)  # the mapped checkpoint, read while it is copied
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
    save_bytes = run.save_bytes or _dtype_bytes(shape.source_dtype)
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


def _dtype_bytes(name: str) -> int:
    return 2 if name in ("bfloat16", "float16", "bf16", "fp16") else 4


def peak(stages: list[StageMemory]) -> tuple[float, float]:
    """``(device peak, host peak)`` over the stages of one process."""
    return max(s.device for s in stages), max((s.host for s in stages), default=0.0)


@dataclass
class StrategyPlan:
    strategy: str
    processes: int
    stages: list[StageMemory]
    device_peak: float
    host_peak_node: float  # host memory of the whole node: every process's host terms
    fits: bool
    reason: str
    seconds: float | None


def plan_all(shape: ModelShape, run: RunSettings, gpus: int, gpu_memory: float, host_memory: float | None,
             samples: int = 0, steps: int = 0, global_batch: int = 1, rft_steps: int = 0) -> list[StrategyPlan]:
    """Every way to run on ``gpus`` devices of ``gpu_memory`` bytes (host RAM ``host_memory``, None:
    unknown). One process only when ``gpus == 1``; DDP/FSDP2 over ``gpus`` processes, and FSDP2 with
    CPU offload also on one GPU."""
    out = []
    for strategy in STRATEGIES:
        n = 1 if strategy == "single" else gpus
        if strategy in ("ddp", "fsdp2") and gpus == 1:
            continue
        if strategy == "single" and gpus > 1:
            continue
        stages = plan_stages(shape, run, strategy, n)
        dev, host = peak(stages)
        host_node = node_host_bytes(stages, n) if run.device_type == "cuda" else dev * n
        ok_dev = dev <= FIT_MARGIN * gpu_memory
        ok_host = host_memory is None or run.device_type != "cuda" or host_node <= FIT_MARGIN * host_memory
        if ok_dev and ok_host:
            reason = "fits"
        elif not ok_dev:
            worst = max(stages, key=lambda s: s.device)
            reason = f"{worst.stage} needs {worst.device / GiB:.1f} GiB per device > {FIT_MARGIN:.0%} of {gpu_memory / GiB:.0f} GiB"
        else:
            reason = f"needs {host_node / GiB:.0f} GiB of host memory > {FIT_MARGIN:.0%} of {host_memory / GiB:.0f} GiB"
        seconds = estimate_seconds(shape, run, strategy, n, steps, global_batch, rft_steps) if steps or rft_steps else None
        out.append(StrategyPlan(strategy, n, stages, dev, host_node, ok_dev and ok_host, reason, seconds))
    return out


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


# ---------------------------------------------------------------------------------------------
# the command to run, and the text


def launch_prefix(strategy: str, gpus: int) -> str:
    """The launcher in front of ``-m dress prune`` (or ``dress prune`` for one process)."""
    cfg = "src/dress/configs/accelerate/"
    if strategy == "single":
        return "dress prune"
    if strategy == "ddp":
        return f"torchrun --nproc_per_node {gpus} -m dress prune"
    if strategy == "fsdp2":
        return f"accelerate launch --config_file {cfg}8gpu-fsdp.yaml --num_processes {gpus} -m dress prune"
    return f"accelerate launch --config_file {cfg}1gpu-fsdp-offload.yaml --num_processes {gpus} -m dress prune"


def format_plan(shape: ModelShape, run: RunSettings, plans: list[StrategyPlan], gpus: int, gpu_memory: float,
                host_memory: float | None, prune_args: str = "") -> str:
    """The human-readable plan: the model, one table per way to run, which fit, the command."""
    lines = [
        f"memory plan: {shape.name} ({shape.model_type}, {shape.params / 1e9:.2f}B parameters, h={shape.hidden}, "
        f"{shape.layers} layers, V={shape.vocab}, stored as {shape.source_dtype})",
        f"  method {run.method}, ratio {run.ratio}; train micro-batch {run.train_batch} x {run.train_seq}"
        f"{' + gradient checkpointing' if run.gradient_checkpointing else ''}; "
        f"{'bf16 autocast' if run.bf16 else 'fp32'}{'; distillation teacher' if run.distill else ''}; "
        f"evaluation {run.eval_batch} x {run.eval_seq}" + ("" if run.eval_enabled else " (off)"),
        f"  device: {gpus} x {gpu_memory / GiB:.0f} GiB {'GPU' if run.device_type == 'cuda' else 'CPU RAM'}"
        + (f"; host memory {host_memory / GiB:.0f} GiB" if host_memory and run.device_type == "cuda" else
           ("; host memory not checked (--host-memory GiB)" if run.device_type == "cuda" else "")),
    ]
    if run.trains:
        act = activation_bytes(shape, run.train_batch, run.train_seq, run.bf16, False)
        ckpt = activation_bytes(shape, run.train_batch, run.train_seq, run.bf16, True)
        lines.append(f"  training activations per micro-batch: {act / GiB:.2f} GiB, "
                     f"{ckpt / GiB:.2f} GiB with gradient checkpointing")
    for plan in plans:
        label = STRATEGY_LABELS[plan.strategy]
        lines.append("")
        lines.append(f"{label}, {plan.processes} process{'es' if plan.processes > 1 else ''}: "
                     f"peak {plan.device_peak / GiB:.1f} GiB per {'GPU' if run.device_type == 'cuda' else 'process'}"
                     + (f", host {plan.host_peak_node / GiB:.0f} GiB per node" if run.device_type == "cuda" else "")
                     + f" -> {'FITS' if plan.fits else 'does not fit'}"
                     + ("" if plan.fits else f" ({plan.reason})")
                     + (f"; training ~{_duration(plan.seconds)}" if plan.seconds else ""))
        lines.append(f"  {'stage':<30}{'weights':>9}{'grads':>8}{'optim':>8}{'activ':>8}{'logits':>8}"
                     f"{'teacher':>8}{'eval':>8}{'other':>8}{'total':>9}{'host':>8}")
        for st in plan.stages:
            parts = dict(st.parts)
            cols = [parts.pop("weights", 0), parts.pop("gradients", 0), parts.pop("optimizer", 0),
                    parts.pop("activations", 0), parts.pop("logits", 0), parts.pop("teacher", 0),
                    parts.pop("evaluation", 0) + parts.pop("scoring", 0), sum(parts.values())]
            lines.append(f"  {st.stage:<30}" + "".join(f"{c / GiB:>8.2f}" for c in cols)
                         + f"{st.device / GiB:>9.2f}{st.host / GiB:>8.2f}")
    fitting = [p for p in plans if p.fits]
    lines.append("")
    if fitting:
        best = fitting[0]
        lines.append(f"run it ({STRATEGY_LABELS[best.strategy]}):")
        lines.append(f"  {launch_prefix(best.strategy, best.processes)} {prune_args}".rstrip())
    else:
        lines.append("nothing fits: lower --batch-size or --seq-len, add --gradient-checkpointing, use more GPUs, "
                     "or an offload engine with more host memory")
    lines.append("(GiB, estimates without allocator fragmentation; a plan fits at <= "
                 f"{FIT_MARGIN:.0%} of the memory; times assume {GPU_TFLOPS['bf16']:.0f} TFLOP/s bf16 per GPU, "
                 f"{PCIE_GBPS:.0f} GB/s PCIe, {CPU_ADAM_PARAMS_PER_S / 1e9:.0f}G AdamW params/s on the host)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def available_memory(device_type: str) -> tuple[float, float]:
    """``(device bytes free, host bytes available)`` for the fit check: CUDA's free memory on the
    current device (``torch.cuda.mem_get_info``), and the host's available RAM (``MemAvailable``)."""
    host = _host_available()
    if device_type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return float(free), host
    return host, host


def _host_available() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with accelerate
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    return float("inf")


# ---------------------------------------------------------------------------------------------
# the check ``dress prune`` runs before loading


def strategy_of(engine: str) -> str:
    """The plan's name for a :class:`dress.distributed.Runtime` engine."""
    import os

    if engine == "local":
        return "single"
    if engine == "ddp":
        return "ddp"
    offload = os.environ.get("FSDP_OFFLOAD_PARAMS", "false").strip().lower() in ("1", "true", "yes")
    return "fsdp2-offload" if offload else "fsdp2"


def check_fits(config, device_type: str, engine: str = "local", processes: int = 1,
               available: tuple[float, float] | None = None, notes: list[str] | None = None) -> list[StageMemory]:
    """Refuse (DressError with the plan) when this run's estimated peak exceeds the memory free now.

    On CUDA the device's free memory (``mem_get_info``) and the host's available RAM; on CPU the
    host's available RAM shared by all ``processes``. Returns the planned stages (recorded in
    ``dress.json`` beside the measured ones). The one-line verdict is logged, or appended to
    ``notes`` for the caller to log later."""
    from dress.errors import DressError
    from dress.logs import log

    shape = load_shape(config.model)
    run = settings_from_config(config, device_type)
    strategy = strategy_of(engine)
    stages = plan_stages(shape, run, strategy, processes)
    dev, host = peak(stages)
    free_dev, free_host = available if available is not None else available_memory(device_type)
    if device_type == "cuda":
        need_dev, need_host = dev - CUDA_CONTEXT, (host - CPU_OVERHEAD) * processes
    else:  # this process's own overhead is already resident (not in MemAvailable)
        need_dev, need_host = (dev - CPU_OVERHEAD) * processes, 0.0
    verdict = f"memory plan: peak {dev / GiB:.2f} GiB per process ({STRATEGY_LABELS[strategy]}); {free_dev / GiB:.1f} GiB free"
    if notes is None:
        log.info(verdict)
    else:
        notes.append(verdict)
    if need_dev > free_dev or need_host > free_host:
        gpus = processes if device_type == "cuda" else 1
        total = free_dev if device_type == "cuda" else free_host
        plans = plan_all(shape, run, gpus, total, free_host)
        text = format_plan(shape, run, plans, gpus, total, free_host, _prune_args(config))
        where = "the GPU" if device_type == "cuda" else "this machine"
        raise DressError(
            f"this run needs about {max(need_dev, need_host) / GiB:.1f} GiB but {where} has "
            f"{(free_dev if need_dev > free_dev else free_host) / GiB:.1f} GiB free; nothing was loaded. "
            f"Pass --skip-memory-check to try anyway.\n{text}"
        )
    return stages


def _prune_args(config) -> str:
    """``MODEL --out OUT`` plus the options that set the plan's memory, for the printed command."""
    args = [config.model or "smollm2-135m", "--out", "OUT", "--method", config.method]
    if config.preset:
        args += ["--preset", config.preset]
    if config.regularize.gradient_checkpointing:
        args.append("--gradient-checkpointing")
    if config.bf16:
        args.append("--bf16")
    return " ".join(args)


def stages_record(stages: list[StageMemory]) -> dict[str, dict[str, float]]:
    """The plan as ``dress.json`` keeps it: GiB per stage, with the named terms."""
    return {s.stage: {"peak_gib": round(s.device / GiB, 3), **{k: round(v / GiB, 3) for k, v in s.parts.items()}}
            for s in stages}


# ---------------------------------------------------------------------------------------------
# the reference table of docs/scale.md (``python -m dress.memory_plan``)


def llama_shape(name: str, hidden: int, inter: int, layers: int, heads: int, kv_heads: int, vocab: int = 32000,
                tied: bool = False, dtype: str = "float16") -> ModelShape:
    """A Llama-family shape from its widths (no config file needed): q, k, v, o, gate, up, down,
    two norms per layer, a final norm, embeddings (and an untied head)."""
    head_dim = hidden // heads
    a, kv = heads * head_dim, kv_heads * head_dim
    per_layer = hidden * a + 2 * hidden * kv + a * hidden + 3 * hidden * inter + 2 * hidden
    embed = vocab * hidden * (1 if tied else 2)
    return ModelShape(name, "llama", params=embed + layers * per_layer + hidden, embed_params=embed, hidden=hidden,
                      layers=layers, vocab=vocab, intermediate=inter, attn_width=a, kv_width=kv, tied=tied,
                      source_dtype=dtype, heads=heads, one_layer=per_layer)


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


if __name__ == "__main__":
    print(markdown_table())
