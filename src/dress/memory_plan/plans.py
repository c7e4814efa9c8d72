"""Every way to run on given hardware (:func:`plan_all`): each strategy's stages, its peaks per
device and per node, whether it fits within :data:`~dress.memory_plan.assumptions.FIT_MARGIN`, why
not, and its training time."""

from __future__ import annotations

from dataclasses import dataclass

from dress.memory_plan.assumptions import FIT_MARGIN, GiB
from dress.memory_plan.settings import RunSettings
from dress.memory_plan.shapes import ModelShape
from dress.memory_plan.stages import StageMemory, node_host_bytes, peak, plan_stages
from dress.memory_plan.strategies import STRATEGIES
from dress.memory_plan.timing import estimate_seconds


@dataclass
class StrategyPlan:
    """One way to run on the given hardware: its stages and peaks, whether it fits (and why not), its
    training time (None when no training time was asked for)."""

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
