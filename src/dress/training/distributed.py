"""Where this process stands in a multi-process launch, and the few collective helpers the
pipeline needs. The engines themselves (DDP, FSDP2) come from Hugging Face
accelerate (:mod:`dress.training.engine`); this module only decides whether one is in use and exposes rank,
barriers, broadcasts, main-process-only logging and each rank's share of a global batch.

Contract:
  * A process is *launched* when a launcher started it as one of several (``WORLD_SIZE > 1``:
    ``torchrun``, ``accelerate launch``), or with an accelerate FSDP config (``ACCELERATE_USE_FSDP``),
    which shards even with one process.
  * Not launched, :func:`current_runtime` returns the local :class:`Runtime` without importing
    accelerate or touching ``torch.distributed``: plain ``dress prune`` stays the single-process
    program it always was.
  * The global batch of one optimizer step is defined once, for any number of processes
    (:func:`dress.training.loop.batch_indices`); :func:`rank_micro_batches` gives each rank a disjoint,
    equal share, so the mean loss of N processes, averaged by the engine, equals the 1-process mean.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from dress.environment import env_flag
from dress.errors import DressError

Engine = Literal["local", "ddp", "fsdp"]


def launched() -> bool:
    """Whether this process was started by a multi-process launcher or with an FSDP config."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or env_flag("ACCELERATE_USE_FSDP")


def engine_kind() -> Engine:
    """Which engine the launch asks for: ``local`` (not launched), ``fsdp`` or ``ddp``. An accelerate
    config of another engine (DeepSpeed, removed: it never ran) is refused, with or without a launcher."""
    if env_flag("ACCELERATE_USE_DEEPSPEED"):
        raise DressError("this launch uses an accelerate DeepSpeed config, which dress no longer supports (it never "
                         "ran); launch with an FSDP2 config: src/dress/configs/accelerate/8gpu-fsdp.yaml, or "
                         "1gpu-fsdp-offload.yaml when the model and optimizer state do not fit the GPUs (docs/scale.md)")
    if not launched():
        return "local"
    if env_flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return "ddp"


@dataclass(frozen=True)
class Runtime:
    """This process in the launch. The default is the single local process (rank 0 of 1)."""

    engine: Engine = "local"
    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # where this rank computes; None: the caller decides (local)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.engine != "local"

    @property
    def sharded(self) -> bool:
        """Parameters are split across processes (FSDP2), not replicated."""
        return self.engine == "fsdp"

    def barrier(self) -> None:
        """Wait until every process gets here (no-op in one process)."""
        if self.distributed:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value`` (any picklable object) on every process."""
        if not self.distributed:
            return value
        from accelerate.utils import broadcast_object_list

        holder = [value if self.is_main else None]
        broadcast_object_list(holder, from_process=0)
        return holder[0]

    def mean(self, values: list[float]) -> list[float]:
        """Element-wise mean of ``values`` over the processes (identity in one process)."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        device = self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the body on the main process first (e.g. a download into a shared cache), then on the rest."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def current_runtime(device: str | None = None) -> Runtime:
    """The runtime of this process; the first call of a launched process joins the process group.

    ``device`` is the user's ``--device`` (``cpu`` forces the gloo backend on a GPU machine). Clear
    errors: an accelerate config of an engine dress does not support (:func:`engine_kind`); FSDP on CPU
    (:func:`require_gpus_for_sharding`); FSDP1 (its flat parameters hide the tensor layout the
    proximal step needs); FSDP's CPU-RAM-efficient loading (it leaves the model empty on all but the main process, while
    dress keeps one full replica per process outside training).
    """
    kind = engine_kind()
    if kind == "local":
        return Runtime()
    cpu = (device or "").startswith("cpu") or not torch.cuda.is_available()
    if cpu:
        require_gpus_for_sharding(kind)
    if kind == "fsdp" and os.environ.get("FSDP_VERSION", "1") != "2":
        raise DressError(
            "dress trains with FSDP2 only (per-parameter sharding, which the DReSS proximal step runs on); set "
            "fsdp_version: 2 in the accelerate config (as in src/dress/configs/accelerate/*.yaml)"
        )
    if kind == "fsdp" and env_flag("FSDP_CPU_RAM_EFFICIENT_LOADING"):
        raise DressError(
            "fsdp_cpu_ram_efficient_loading: true is not supported: dress keeps a full copy of the model in every "
            "process between training stages; set it to false (as in src/dress/configs/accelerate/*.yaml)"
        )
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    return Runtime(kind, state.process_index, state.num_processes, state.device)


def require_gpus_for_sharding(kind: Engine) -> None:
    """Refuse a sharded engine on CPU: accelerate builds FSDP only over GPUs (its state falls back
    to plain CPU data parallel). The test suite lifts this gate, and accelerate's, to run FSDP2 over
    gloo (tests/cpu_fsdp.py); users get the clear error."""
    if kind == "fsdp":
        raise DressError(
            f"{kind.upper()} needs CUDA GPUs (accelerate shards only across GPUs); on CPU launch plain data "
            "parallel: torchrun --nproc_per_node N -m dress prune ..."
        )


def rank_micro_batches(step_indices: torch.Tensor, batch_size: int, rank: int, world: int) -> list[torch.Tensor]:
    """This rank's disjoint share of one optimizer step's global sample indices, cut into
    micro-batches of one size (the largest divisor of the share that is at most ``batch_size``).

    ``step_indices`` are the step's ``batch_size * grad_accum`` global indices in order; rank ``r``
    takes the ``r``-th contiguous ``1/world`` of them. Equal shares and equal micro-batch sizes make
    ``mean over ranks of (mean over micro-batches of the micro-batch mean loss)`` the global mean.
    """
    total = int(step_indices.numel())
    if total % world:
        raise DressError(
            f"the global batch (batch_size x grad_accum = {total} samples per step) must be divisible by the "
            f"number of processes ({world}); raise the stage's grad_accum or batch_size (--grad-accum, --batch-size, "
            "--rft-grad-accum, --rft-batch-size, --trsp-grad-accum, ...), or launch fewer processes"
        )
    share = total // world
    mine = step_indices[rank * share : (rank + 1) * share]
    size = max(d for d in range(1, min(batch_size, share) + 1) if share % d == 0)
    return list(mine.split(size))
