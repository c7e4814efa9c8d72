"""Training engines: what :func:`dress.training.loop.train` calls to prepare, split the batch, run
backward, clip, apply the step hook, checkpoint and hand the trained model back.

:class:`LocalEngine` -- one process, plain PyTorch: the loop dress always had (the same tensor
operations in the same order, the same ``state.pt`` checkpoints).

:class:`AccelerateEngine` -- a launched process (see :mod:`dress.training.distributed`); accelerate does the
parallelism, dress never writes its own:

* **DDP** (``torchrun`` / ``accelerate launch`` without an FSDP or DeepSpeed config):
  ``accelerator.prepare`` wraps the caller's model (its parameters stay the caller's). Each rank
  runs its share of the global batch (:func:`dress.training.distributed.rank_micro_batches`); gradients
  are averaged once per optimizer step (``no_sync`` on the other micro-batches); the weights stay
  identical on every rank, so the step hook (the proximal step) runs unchanged on each. Checkpoints
  are the single-process ``state.pt``, written by the main process: a run resumes on any number
  of processes, one included.
* **FSDP2 / DeepSpeed ZeRO** (sharded): accelerate shards a *twin* of the caller's model -- a deep
  copy whose parameters start as views of the caller's, so it costs no memory -- while the
  caller's model waits on the CPU. The proximal step runs on the shards
  (a hook with ``on_dtensors``/``on_deepspeed``, e.g. :class:`dress.methods.dress.sharded.ProximalPenalty`); other step hooks and ``extra_loss`` (TRSP) need replicated weights and
  are refused. After the last step the trained weights are gathered one tensor at a time into the
  caller's parameters and the model returns to its device: everything after training (removal,
  LoRA merge, evaluation, saving) sees a plain model changed in place, as in one process.
  Checkpoints are ``accelerator.save_state`` (sharded; FSDP's distributed checkpoint reshards on
  load, so a different number of processes may resume; DeepSpeed needs the same number) plus
  ``progress.json``. The FSDP2 path runs in the test suite on CPU (tests/cpu_fsdp.py).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from dress.training.distributed import Runtime, current_runtime, rank_micro_batches
from dress.errors import DressError
from dress.training.schedule import batch_indices

SHARDED_STATE = "state"  # checkpoint_dir/state/: accelerate's save_state + progress.json
PROGRESS = "progress.json"


def make_optimizer(param_groups: list[dict], settings, optimizer_class=None) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.95) over ``param_groups``: the optimizer of every training stage."""
    optimizer_class = optimizer_class or torch.optim.AdamW
    return optimizer_class(param_groups, lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.95))


def make_engine(settings) -> LocalEngine | AccelerateEngine:
    """The engine for this process: local unless launched (see :mod:`dress.training.distributed`)."""
    runtime = current_runtime()
    if not runtime.distributed:
        return LocalEngine(settings)
    return AccelerateEngine(runtime, settings)


class LocalEngine:
    """One process, plain PyTorch (see module docstring)."""

    runtime = Runtime()
    sharded = False

    def __init__(self, settings):
        self.settings = settings

    @property
    def is_main(self) -> bool:
        return True

    def check_hooks(self, after_step, extra_loss, distill=None) -> None:
        return None

    def prepare(self, model: nn.Module, param_groups: list[dict]):
        """``(model to run, optimizer, parameters to clip)``."""
        optimizer = make_optimizer(param_groups, self.settings)
        return model, optimizer, [p for group in param_groups for p in group["params"]]

    def input_device(self, model: nn.Module) -> torch.device:
        return next(model.parameters()).device

    def micro_batches(self, step: int, n_samples: int) -> list[torch.Tensor]:
        return [batch_indices(step, micro, n_samples, self.settings) for micro in range(self.settings.grad_accum)]

    def micro_step(self, model: nn.Module, last: bool):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def mean(self, values: list[float]) -> list[float]:
        return values

    def clip(self, model: nn.Module, params: list[torch.Tensor]) -> None:
        torch.nn.utils.clip_grad_norm_(params, self.settings.max_grad_norm)

    def after_step(self, hook: Callable[[int, float], float | None], step: int, lr_t: float) -> float | None:
        return hook(step, lr_t)

    def finish(self, model: nn.Module) -> None:
        """After the last step: make ``model`` (the caller's) hold the trained weights."""
        return None

    def close(self) -> None:
        return None


class AccelerateEngine(LocalEngine):
    """A launched process: DDP, FSDP2 or DeepSpeed through accelerate (see module docstring)."""

    def __init__(self, runtime: Runtime, settings):
        from accelerate import Accelerator

        super().__init__(settings)
        self.runtime = runtime
        self.sharded = runtime.sharded
        per_step = settings.batch_size * settings.grad_accum
        try:
            shares = rank_micro_batches(torch.arange(per_step), settings.batch_size, runtime.rank, runtime.world)
        except DressError as err:
            raise DressError(f"{settings.desc}: {err}") from None
        self.n_micro, self.micro_size = len(shares), len(shares[0])
        cpu = runtime.device.type == "cpu"
        # DDP keeps dress's own autocast (as in one process); sharded engines cast parameters themselves.
        mixed = "bf16" if settings.bf16 and not cpu and self.sharded else "no"
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=mixed)
        # dress scales the loss of each micro-batch itself; only DeepSpeed counts micro-batches
        # (and a launch flag or env value for accumulation must not rescale the loss again).
        self.accelerator.gradient_accumulation_steps = self.n_micro if runtime.engine == "deepspeed" else 1
        self.home: torch.device | None = None
        self.model: nn.Module | None = None  # the caller's model, while its twin trains (sharded)
        self.twin: nn.Module | None = None
        self.live: dict[str, torch.Tensor] = {}
        self.trained: list[str] = []

    @property
    def is_main(self) -> bool:
        return self.runtime.is_main

    def check_hooks(self, after_step, extra_loss, distill=None) -> None:
        if not self.sharded:
            return
        if distill is not None:
            raise DressError(
                f"{self.settings.desc}: distillation keeps a full copy of the dense model on every process, which "
                f"defeats {self.runtime.engine.upper()} sharding; set --distill 0, or launch with plain data parallel"
            )
        if extra_loss is not None or (after_step is not None and not hasattr(after_step, "on_dtensors")):
            raise DressError(
                f"{self.settings.desc}: this stage needs replicated weights (its penalty reads the forward pass "
                f"or the parameters directly), which {self.runtime.engine.upper()} shards; launch it with plain "
                "data parallel (accelerate launch without an FSDP/DeepSpeed config, or torchrun)"
            )

    def prepare(self, model: nn.Module, param_groups: list[dict]):
        if not self.sharded:
            optimizer = make_optimizer(param_groups, self.settings)
            model, optimizer = self.accelerator.prepare(model, optimizer)
            return model, optimizer, [p for group in param_groups for p in group["params"]]
        self.home, self.model = next(model.parameters()).device, model
        model.to("cpu")  # the GPU is for the shards
        self.twin, twin_of = _twin(model)
        self.trained = [name for name, p in model.named_parameters() if p.requires_grad]
        groups = [{**group, "params": [twin_of[id(p)] for p in group["params"]]} for group in param_groups]
        optimizer = make_optimizer(groups, self.settings, self._deepspeed_setup())
        prepared, optimizer = self.accelerator.prepare(self.twin, optimizer)
        self.live = dict(self.accelerator.unwrap_model(prepared).named_parameters())
        return prepared, optimizer, [p for p in prepared.parameters() if p.requires_grad]

    def _deepspeed_setup(self):
        """DeepSpeed reads batch geometry and clipping from its config; returns the optimizer class
        (DeepSpeed's CPU Adam when the config offloads optimizer state, else None: torch AdamW)."""
        if self.runtime.engine != "deepspeed":
            return None
        config = self.accelerator.state.deepspeed_plugin.deepspeed_config
        config["train_micro_batch_size_per_gpu"] = self.micro_size
        config["gradient_accumulation_steps"] = self.n_micro
        config["train_batch_size"] = self.micro_size * self.n_micro * self.runtime.world
        config["gradient_clipping"] = self.settings.max_grad_norm
        offload = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
        if offload in ("cpu", "nvme"):
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return lambda groups, **kw: DeepSpeedCPUAdam(groups, adamw_mode=True, **kw)
        return None

    def input_device(self, model: nn.Module) -> torch.device:
        return self.accelerator.device

    def micro_batches(self, step: int, n_samples: int) -> list[torch.Tensor]:
        everything = torch.cat([batch_indices(step, m, n_samples, self.settings) for m in range(self.settings.grad_accum)])
        return rank_micro_batches(everything, self.settings.batch_size, self.runtime.rank, self.runtime.world)

    def micro_step(self, model: nn.Module, last: bool):
        if self.runtime.engine == "deepspeed":
            return self.accelerator.accumulate(model)  # tells DeepSpeed where the step boundary is
        if self.runtime.engine == "ddp" and not last:
            return self.accelerator.no_sync(model)  # average gradients once per optimizer step
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        if self.runtime.engine == "deepspeed":
            loss = loss * self.n_micro  # DeepSpeed divides by its gradient_accumulation_steps itself
        self.accelerator.backward(loss)

    def mean(self, values: list[float]) -> list[float]:
        return self.runtime.mean(values)

    def clip(self, model: nn.Module, params: list[torch.Tensor]) -> None:
        self.accelerator.clip_grad_norm_(params, self.settings.max_grad_norm)

    def after_step(self, hook, step: int, lr_t: float) -> float | None:
        if not self.sharded:
            return hook(step, lr_t)
        if self.runtime.engine == "fsdp":
            return hook.on_dtensors(self.live, step, lr_t)
        return hook.on_deepspeed(self.live, step, lr_t)

    @torch.no_grad()
    def finish(self, model: nn.Module) -> None:
        if not self.sharded:
            return
        own = dict(model.named_parameters())
        for name in self.trained:  # every rank, same order: each gather is a collective
            full = _full_tensor(self.live[name], self.runtime.engine)
            own[name].data.copy_(full.to(own[name].device, own[name].dtype))
            del full

    def close(self) -> None:
        if self.model is not None:
            self.model.to(self.home)  # back where it was, trained or not
        self.model = None
        self.live.clear()
        self.twin = None
        self.accelerator.free_memory()
        gc.collect()  # drop DDP's gradient hooks and the shards before the next stage

    # -- sharded checkpoints -------------------------------------------------------------------

    def save_sharded(self, directory: Path, step: int, history: dict) -> None:
        """All ranks: ``accelerator.save_state`` into a fresh folder, renamed into place when whole."""
        tmp, final = directory / f"{SHARDED_STATE}.tmp", directory / SHARDED_STATE
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.runtime.barrier()
        self.accelerator.save_state(str(tmp))
        self.runtime.barrier()
        if self.is_main:
            (tmp / PROGRESS).write_text(json.dumps({"step": step, "history": history}))
            old = directory / f"{SHARDED_STATE}.old-{os.getpid()}"
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        self.runtime.barrier()

    def load_sharded(self, directory: Path) -> tuple[int, dict] | None:
        final = directory / SHARDED_STATE
        if not (final / PROGRESS).is_file():
            return None
        self.accelerator.load_state(str(final))
        progress = json.loads((final / PROGRESS).read_text())
        return int(progress["step"]), progress["history"]


def _twin(model: nn.Module) -> tuple[nn.Module, dict[int, nn.Parameter]]:
    """A deep copy of ``model`` whose parameters are new ``nn.Parameter`` objects viewing the same
    storage (tied parameters stay tied), and the map ``id(original) -> twin parameter``. Engines may
    replace or re-point the twin's parameters without touching the caller's."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach(), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b
    twin_of = {key: value for key, value in memo.items() if isinstance(value, nn.Parameter)}
    return copy.deepcopy(model, memo), twin_of


def _full_tensor(param: torch.Tensor, engine: str) -> torch.Tensor:
    """The whole (unsharded, full-precision) value of a live parameter. Collective."""
    if engine == "deepspeed":
        from deepspeed.utils import safe_get_full_fp32_param

        full = safe_get_full_fp32_param(param)
        if full is None:
            raise DressError("DeepSpeed holds no fp32 master weight for a trained parameter")
        return full
    from torch.distributed.tensor import DTensor

    return param.full_tensor() if isinstance(param, DTensor) else param.detach()


@contextlib.contextmanager
def engine_for(settings) -> Iterator[LocalEngine | AccelerateEngine]:
    """:func:`make_engine` that releases what the engine holds when the stage ends."""
    engine = make_engine(settings)
    try:
        yield engine
    finally:
        engine.close()
