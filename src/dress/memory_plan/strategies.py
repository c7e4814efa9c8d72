"""The ways to run ``dress prune`` the plan compares: their names (:data:`STRATEGIES`), labels, which
launch engine is which (:func:`strategy_of`) and the command that starts each (:func:`launch_prefix`,
:func:`prune_args`). Names only: no memory arithmetic here."""

from __future__ import annotations

from dress.config import flag_of
from dress.presets import differences

STRATEGIES = ("single", "ddp", "fsdp2", "fsdp2-offload")
STRATEGY_LABELS = {
    "single": "one process",
    "ddp": "DDP",
    "fsdp2": "FSDP2",
    "fsdp2-offload": "FSDP2 + CPU offload",
}


def strategy_of(engine: str) -> str:
    """The plan's name for a :class:`dress.training.distributed.Runtime` engine."""
    import os

    if engine == "local":
        return "single"
    if engine == "ddp":
        return "ddp"
    offload = os.environ.get("FSDP_OFFLOAD_PARAMS", "false").strip().lower() in ("1", "true", "yes")
    return "fsdp2-offload" if offload else "fsdp2"


def launch_prefix(strategy: str, gpus: int) -> str:
    """The launcher in front of ``-m dress prune`` (or ``dress prune`` for one process)."""
    cfg = "src/dress/configs/accelerate/"
    if strategy == "single":
        return "dress prune"
    if strategy == "ddp":
        return f"torchrun --nproc_per_node {gpus} -m dress prune"
    if strategy == "fsdp2":
        return f"accelerate launch --config_file {cfg}8gpu-fsdp.yaml --num_processes {gpus} -m dress prune"
    # fsdp2-offload
    return f"accelerate launch --config_file {cfg}1gpu-fsdp-offload.yaml --num_processes {gpus} -m dress prune"


def prune_args(config) -> str:
    """``MODEL --out OUT --method M [--preset P]`` plus a flag for every setting that differs from the
    preset (every method's and block's alike), so the printed command repeats the planned run."""
    args = [str(config.model or "smollm2-135m"), "--out", "OUT", "--method", config.method]
    if config.preset:
        args += ["--preset", config.preset]
    for dotted, value in differences(config).items():
        flag = flag_of(dotted)
        if flag is None or dotted == "method" or value is None:
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return " ".join(args)
