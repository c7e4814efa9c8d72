"""What ``dress prune`` settles before it loads anything: the preset, bf16 on this
device, the global batch for this many processes, and the memory plan's verdict.

Contract of :func:`resolve_run`: returns the config the run will use (the preset applied, the
batches adapted) and the planned stages, or raises :class:`~dress.errors.DressError` with the plan
when the run will not fit (``skip_memory_check=True`` skips the check). Every change it makes is logged
and recorded (:func:`run_record`).
"""

from __future__ import annotations

import torch

from dress.config import flag_of
from dress.errors import DressError
from dress.logs import log
from dress.memory_plan.check import check_fits
from dress.memory_plan.render import stages_record
from dress.presets import apply_preset, default_preset, differences
from dress.training.config import TrainingConfig


def resolve_run(config, device: torch.device, runtime):
    name = config.preset or default_preset(config.model, device.type)
    if config.preset is None and name != "cpu-demo":
        log.info(f"no --preset: a model that is not bundled, on a GPU, runs the {name!r} protocol "
            "(pass --preset cpu-demo for the small CPU-sized one)")
    config = apply_preset(config, name)
    if device.type == "cuda" and config.bf16 is not False and not cuda_bf16_supported(device):
        log.warning(f"{torch.cuda.get_device_name(device)} does not support bf16: running in fp32 "
            "(bf16 needs compute capability 8.0+, e.g. A100/H100; --no-bf16 silences this)")
        config = config.model_copy(update={"bf16": False})
    config, notes = adapt_global_batches(config, runtime.world)
    for note in notes:
        log.info(f"{note}")
    planned = None
    verdict: list[str] = []
    if not config.skip_memory_check:
        try:
            planned = check_fits(config, device.type, runtime.engine, runtime.world, notes=verdict)
        except DressError:
            raise
        except Exception as err:  # a custom architecture the plan cannot build: say so, go on
            log.info(f"memory plan unavailable ({type(err).__name__}: {err}); loading without a check")
    return config, {"stages": planned, "batch_notes": notes, "verdict": verdict}


def cuda_bf16_supported(device: torch.device) -> bool:
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported())


def run_record(config, planned: dict) -> dict:
    """The record's ``preset``, ``differs_from_preset``, ``memory_plan`` and ``batch_adapted`` entries."""
    out = {"preset": config.preset, "differs_from_preset": differences(config)}
    if planned.get("stages"):
        out["memory_plan"] = stages_record(planned["stages"])
    if planned.get("batch_notes"):
        out["batch_adapted"] = planned["batch_notes"]
    return out


def adapt_global_batches(config, world: int):
    """``(config, notes)``: every training stage's global batch (``batch_size x grad_accum``) made
    divisible by ``world`` processes by raising ``grad_accum`` to the least multiple that splits
    (the global batch becomes ``lcm(batch, world)``; steps unchanged, so each step sees more
    windows). A global batch that already divides is kept, so "N processes train to the same
    weights as one" holds whenever the user gives such a batch (e.g. ``--grad-accum 8`` on 8)."""
    import math

    notes = []
    updates = {}
    for stage in type(config).model_fields:  # every block that trains (regularize, recovery, trsp, ...)
        block = getattr(config, stage)
        if not isinstance(block, TrainingConfig):
            continue
        flag = flag_of(f"{stage}.grad_accum") or f"{stage}.grad_accum"
        total = block.batch_size * block.grad_accum
        if world > 1 and total % world:
            accum = block.grad_accum * world // math.gcd(total, world)
            updates[stage] = block.model_copy(update={"grad_accum": accum})
            notes.append(f"{stage}: global batch {total} -> {block.batch_size * accum} windows per step "
                         f"({flag} {block.grad_accum} -> {accum}) so that {world} processes split it evenly")
    return (config.model_copy(update=updates) if updates else config), notes
