"""The ways to run ``dress prune`` the plan compares: their names (:data:`STRATEGIES`), labels, which
launch engine is which (:func:`strategy_of`) and the command that starts each (:func:`launch_prefix`,
:func:`prune_args`). Names only: no memory arithmetic here."""

from __future__ import annotations

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
    """``MODEL --out OUT`` plus the options that set the plan's memory, for the printed command."""
    args = [config.model or "smollm2-135m", "--out", "OUT", "--method", config.method]
    if config.preset:
        args += ["--preset", config.preset]
    if config.regularize.gradient_checkpointing:
        args.append("--gradient-checkpointing")
    if config.bf16:
        args.append("--bf16")
    return " ".join(args)
