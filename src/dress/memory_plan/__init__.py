"""The memory plan: what each stage of ``dress prune`` holds, per process, before any weight loads.

Contract: the plan is a pure function of a :class:`ModelShape` (read from the model's config
alone, see :func:`load_shape`) and a :class:`RunSettings` (read from a
:class:`~dress.config.PruneConfig`); nothing allocates a tensor. ``dress plan`` prints it, and
``dress prune`` runs the same check before loading and refuses when the peak exceeds the memory
it can see (``--skip-memory-check`` overrides). ``benchmarks/bench_memory_plan.py`` holds the
prediction against the measured per-stage peak (docs/scale.md).

One idea per module (this package re-exports the names callers use):

* :mod:`~dress.memory_plan.assumptions` the byte unit, measured overheads, fit margin, throughputs;
* :mod:`~dress.memory_plan.shapes` :class:`ModelShape` from a config (or from widths);
* :mod:`~dress.memory_plan.settings` :class:`RunSettings` from a :class:`~dress.config.PruneConfig`;
* :mod:`~dress.memory_plan.method` :class:`MethodMemory`, what a method tells the plan;
* :mod:`~dress.memory_plan.pruned` the shape a cut leaves;
* :mod:`~dress.memory_plan.terms` single terms (activations, logits, a no-grad forward, LoRA);
* :mod:`~dress.memory_plan.stages` :class:`StageMemory` per stage, :func:`plan_stages`;
* :mod:`~dress.memory_plan.strategies` the ways to run: names, labels, engines, commands;
* :mod:`~dress.memory_plan.timing` the training-time estimate;
* :mod:`~dress.memory_plan.plans` every way to run on given hardware, and which fit;
* :mod:`~dress.memory_plan.render` the plan as text (``dress plan``) and as ``dress.json`` keeps it;
* :mod:`~dress.memory_plan.reference` the reference table of docs/scale.md;
* :mod:`~dress.memory_plan.host` the memory free now (the only module that asks the system);
* :mod:`~dress.memory_plan.check` the check ``dress prune`` runs before loading.

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
  Outside training every process keeps the whole fp32 model on its device (selection, removal,
  evaluation); while a sharded stage trains, that copy waits in host memory.
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

from dress.memory_plan.assumptions import (CPU_ADAM_PARAMS_PER_S, CPU_OVERHEAD, CUDA_CONTEXT, FIT_MARGIN, GPU_TFLOPS,
                                           GiB, PCIE_GBPS, TOKENIZER_BYTES_PER_TOKEN)
from dress.memory_plan.check import check_fits
from dress.memory_plan.host import available_memory
from dress.memory_plan.method import MethodMemory, method_memory
from dress.memory_plan.plans import StrategyPlan, plan_all
from dress.memory_plan.pruned import layers_for, narrower, pruned_shape, shorter, width_for
from dress.memory_plan.reference import PAPER_RUN, REFERENCE_SHAPES, markdown_table
from dress.memory_plan.render import format_plan, stages_record
from dress.memory_plan.settings import RunSettings, settings_from_config
from dress.memory_plan.shapes import ModelShape, llama_shape, load_shape, shape_from_config
from dress.memory_plan.stages import StageMemory, node_host_bytes, peak, plan_stages, training_stage
from dress.memory_plan.strategies import STRATEGIES, STRATEGY_LABELS, launch_prefix, prune_args, strategy_of
from dress.memory_plan.terms import activation_bytes, dtype_bytes, inference_bytes, lora_params, training_logits_bytes
from dress.memory_plan.timing import estimate_seconds

__all__ = [
    "CPU_ADAM_PARAMS_PER_S", "CPU_OVERHEAD", "CUDA_CONTEXT", "FIT_MARGIN", "GPU_TFLOPS", "GiB",
    "MethodMemory", "ModelShape", "PAPER_RUN", "PCIE_GBPS", "REFERENCE_SHAPES", "RunSettings", "STRATEGIES",
    "STRATEGY_LABELS", "StageMemory", "StrategyPlan", "TOKENIZER_BYTES_PER_TOKEN", "activation_bytes",
    "available_memory", "check_fits", "dtype_bytes", "estimate_seconds", "format_plan", "inference_bytes",
    "launch_prefix", "layers_for", "llama_shape", "load_shape", "lora_params", "markdown_table",
    "method_memory", "narrower", "node_host_bytes", "peak", "plan_all", "plan_stages", "prune_args",
    "pruned_shape", "settings_from_config", "shape_from_config", "shorter", "stages_record", "strategy_of",
    "training_logits_bytes", "training_stage", "width_for",
]
