"""The check ``dress prune`` runs before loading (:func:`check_fits`): the plan of this run against
the memory free now; a run that would not fit is refused with the plan printed, before any weight loads."""

from __future__ import annotations

from dress.errors import DressError
from dress.logs import log
from dress.memory_plan.assumptions import CPU_OVERHEAD, CUDA_CONTEXT, GiB
from dress.memory_plan.host import available_memory
from dress.memory_plan.plans import plan_all
from dress.memory_plan.render import format_plan
from dress.memory_plan.settings import settings_from_config
from dress.memory_plan.shapes import load_shape
from dress.memory_plan.stages import StageMemory, peak, plan_stages
from dress.memory_plan.strategies import STRATEGY_LABELS, prune_args, strategy_of


def check_fits(config, device_type: str, engine: str = "local", processes: int = 1,
               available: tuple[float, float] | None = None, notes: list[str] | None = None) -> list[StageMemory]:
    """Refuse (DressError with the plan) when this run's estimated peak exceeds the memory free now.

    On CUDA the device's free memory (``mem_get_info``) and the host's available RAM; on CPU the
    host's available RAM shared by all ``processes``. Returns the planned stages (recorded in
    ``dress.json`` beside the measured ones). The one-line verdict is logged, or appended to
    ``notes`` for the caller to log later."""
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
        text = format_plan(shape, run, plans, gpus, total, free_host, prune_args(config))
        where = "the GPU" if device_type == "cuda" else "this machine"
        raise DressError(
            f"this run needs about {max(need_dev, need_host) / GiB:.1f} GiB but {where} has "
            f"{(free_dev if need_dev > free_dev else free_host) / GiB:.1f} GiB free; nothing was loaded. "
            f"Pass --skip-memory-check to try anyway.\n{text}"
        )
    return stages
