"""What a run says when CUDA runs out of memory: one :class:`~dress.errors.DressError` naming the
stage, the levers to pull, the memory plan for this GPU (when it can be built), and that
``--resume`` continues from the checkpoints already written."""

from __future__ import annotations

import torch

from dress.errors import DressError
from dress.memory_plan import format_plan, load_shape, plan_all, settings_from_config


def out_of_memory_error(err: BaseException, stage: str | None, config, device: torch.device, runtime,
                        work_dir) -> DressError:
    """A DressError for a CUDA out-of-memory in ``stage``: the plan's advice, and --resume."""
    advice = ""
    try:
        shape = load_shape(config.model)
        run = settings_from_config(config, device.type)
        total = float(torch.cuda.get_device_properties(device).total_memory) if device.type == "cuda" else 0.0
        if total:
            plans = plan_all(shape, run, max(runtime.world, 1), total, None)
            advice = "\n" + format_plan(shape, run, plans, max(runtime.world, 1), total, None)
    except Exception:  # the advice is a bonus; the error itself must come out
        advice = ""
    kept = f" Checkpoints written so far are kept in {work_dir}; fix the setting and rerun with --resume." if work_dir else ""
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DressError(
        f"out of memory in stage {stage or '?'!s} ({first}).{kept} Levers: --gradient-checkpointing, a smaller "
        f"--batch-size/--seq-len/--eval-seq-len/--score-batch-size, --bf16, more GPUs or an offload engine "
        f"(see `dress plan`).{advice}"
    )
