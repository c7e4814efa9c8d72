"""Launch settings from the shipped accelerate configs, and FSDP2 over gloo on CPU, for the test
suite only.

accelerate builds its FSDP engine only when the launch runs on GPUs: on CPU its state falls back to
plain multi-CPU data parallel, and dress refuses the launch with a clear message
(:func:`dress.training.distributed.require_gpus_for_sharding`). torch's ``fully_shard`` itself runs on CPU
over gloo, so with both gates lifted the whole sharded path -- accelerate's ``prepare`` (FSDP2
wrapping), dress's twin, the proximal step on DTensor shards, the gather back, and
``save_state``/``load_state`` through torch distributed checkpoint -- runs here as it would on
GPUs, minus NCCL, CUDA streams and bf16.
"""

from __future__ import annotations

import os
from pathlib import Path

import dress

SHIPPED_CONFIGS = Path(dress.__file__).parent / "configs" / "accelerate"
FSDP_CONFIG = SHIPPED_CONFIGS / "8gpu-fsdp.yaml"


def launch_environment(config_file: Path) -> dict[str, str]:
    """The environment ``accelerate launch --config_file FILE`` gives each process (its own code)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "dress", "prune"])
    args, _defaults, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args) if args.use_fsdp or args.multi_gpu else {}
    return {**env, "WORLD_SIZE": str(args.num_processes)}


def fsdp_environment() -> dict[str, str]:
    """The FSDP variables of the shipped ``8gpu-fsdp.yaml`` launch, with fp32 compute: the CPU
    comparison against one process must be exact."""
    env = launch_environment(FSDP_CONFIG)
    chosen = {k: v for k, v in env.items() if k == "ACCELERATE_USE_FSDP" or k.startswith("FSDP_")}
    return {**chosen, "ACCELERATE_MIXED_PRECISION": "no"}


def allow_fsdp_on_cpu() -> None:
    """Lift accelerate's GPU-only FSDP gate and dress's refusal in this process (call before any
    accelerate state exists)."""
    import accelerate.state as state
    from accelerate.utils import DistributedType

    import dress.training.distributed as distributed

    assert os.environ.get("ACCELERATE_USE_FSDP") == "true", "run under fsdp_environment()"
    real_init = state.AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        real_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP  # what accelerate does on GPUs, and it
            self.fsdp_plugin = fsdp_plugin  # also records the type in the shared PartialState:
            state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    state.AcceleratorState.__init__ = init
    distributed.require_gpus_for_sharding = lambda kind: None
