"""The numbers the plan assumes rather than derives: the byte unit, measured process overheads, the
fit margin and the throughputs of the time estimate. Change one here and every plan, check and
table follows; quote the throughputs wherever a time is printed
(:func:`dress.memory_plan.render.format_plan` does)."""

from __future__ import annotations

GiB = 2**30
CPU_OVERHEAD = 0.45 * GiB  # python + torch + transformers + tokenizer, measured RSS before loading (2-core CPU)
CUDA_CONTEXT = 0.6 * GiB  # CUDA context + cuBLAS workspace, outside torch's allocator
TOKENIZER_BYTES_PER_TOKEN = 1800  # a fast tokenizer's resident size per vocabulary entry (measured: SmolLM2 49K, Gemma3 262K)
FIT_MARGIN = 0.90  # a plan fits when its peak is at most 90% of the memory (fragmentation, spikes)

# Throughput assumptions of the time estimate (state them wherever a time is quoted).
GPU_TFLOPS = {"bf16": 300.0, "fp32": 40.0}  # effective TFLOP/s of one H100-class GPU: ~30% of its 989 dense bf16 peak
PCIE_GBPS = 20.0  # host <-> device, GB/s, per GPU (CPU offload moves the weights every forward/backward)
CPU_ADAM_PARAMS_PER_S = 1.0e9  # AdamW parameters per second on the host (CPU offload steps there)
