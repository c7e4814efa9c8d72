"""The plan as text and as a record: :func:`format_plan` (what ``dress plan`` and a refused
``dress prune`` print) and :func:`stages_record` (GiB per stage, as ``dress.json`` keeps it)."""

from __future__ import annotations

from dress.memory_plan.assumptions import CPU_ADAM_PARAMS_PER_S, FIT_MARGIN, GPU_TFLOPS, PCIE_GBPS, GiB
from dress.memory_plan.plans import StrategyPlan
from dress.memory_plan.settings import RunSettings
from dress.memory_plan.shapes import ModelShape
from dress.memory_plan.stages import StageMemory
from dress.memory_plan.strategies import STRATEGY_LABELS, launch_prefix
from dress.memory_plan.terms import activation_bytes


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


def stages_record(stages: list[StageMemory]) -> dict[str, dict[str, float]]:
    """The plan as ``dress.json`` keeps it: GiB per stage, with the named terms."""
    return {s.stage: {"peak_gib": round(s.device / GiB, 3), **{k: round(v / GiB, 3) for k, v in s.parts.items()}}
            for s in stages}
