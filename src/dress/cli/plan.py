"""``dress plan``: the memory plan of a ``dress prune`` run, from the model's config alone.

Takes the same options as ``dress prune`` (and the same presets) plus the hardware: how many GPUs
and how much memory each has. Prints, per stage and per way to run (one process, DDP, FSDP2, FSDP2
with CPU offload), what each process holds, which fit, and the command to run (see
:mod:`dress.memory_plan`). Loads no weights; a hub id needs only its config.json.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from pathlib import Path

    from dress.cli.options import add_config_options

    p = subparsers.add_parser(
        "plan",
        help="memory plan of a prune run (reads only the model's config)",
        description="Print what each stage of `dress prune MODEL [options]` holds in memory per process, for "
        "each way to run it on --gpus GPUs of --gpu-memory GiB, which fit, and the command to run.",
    )
    p.add_argument("model", nargs="?", help="bundled name, local folder or hub id (default: bundled smollm2-135m)")
    p.add_argument("--gpus", type=int, default=1, help="number of GPUs (processes) (default 1)")
    p.add_argument("--gpu-memory", type=float, default=80.0, help="memory of each GPU, GiB (default 80)")
    p.add_argument("--host-memory", type=float, default=None,
                   help="host RAM of the node, GiB (default: this machine's, when it has a GPU or --cpu)")
    p.add_argument("--cpu", action="store_true", help="plan a CPU run instead (memory = host RAM)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--config", type=Path, help="JSON or YAML config file (PruneConfig fields, or a dress.json)")
    p.set_defaults(_config_fields=add_config_options(p, skip=("model",)))
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from dress.cli.prune import config_from_args
    from dress.errors import DressError
    from dress.memory_plan import (GiB, format_plan, load_shape, plan_all, prune_args, settings_from_config,
                                   stages_record)
    from dress.presets import apply_preset, default_preset

    if args.gpus < 1:
        raise DressError("--gpus must be at least 1")
    config = config_from_args(args)
    device_type = "cpu" if args.cpu or (config.device or "").startswith("cpu") else "cuda"
    config = apply_preset(config, config.preset or default_preset(config.model, device_type))
    shape = load_shape(config.model)
    runset = settings_from_config(config, device_type)
    import torch

    if args.host_memory is not None:
        host = args.host_memory * GiB
    elif device_type == "cpu" or torch.cuda.is_available():  # planning for this machine
        import psutil

        host = float(psutil.virtual_memory().total)
    else:  # planning a GPU run from a machine without one: its RAM says nothing about the GPU node's
        host = None
    gpus = 1 if device_type == "cpu" else args.gpus
    memory = host if device_type == "cpu" else args.gpu_memory * GiB
    global_batch = config.regularize.batch_size * config.regularize.grad_accum
    plans = plan_all(shape, runset, gpus, memory, host, steps=config.regularize.steps if runset.trains else 0,
                     global_batch=global_batch, rft_steps=config.recovery.steps if runset.rft else 0)
    if args.json:
        print(json.dumps({
            "model": shape.__dict__, "settings": runset.__dict__, "preset": config.preset,
            "plans": [{"strategy": p.strategy, "processes": p.processes, "fits": p.fits, "reason": p.reason,
                       "device_peak_gib": round(p.device_peak / GiB, 3), "host_node_gib": round(p.host_peak_node / GiB, 3),
                       "training_seconds": p.seconds, "stages": stages_record(p.stages)} for p in plans],
        }, indent=2))
        return 0
    print(f"preset {config.preset}")
    print(format_plan(shape, runset, plans, gpus, memory, host, prune_args(config)))
    return 0
