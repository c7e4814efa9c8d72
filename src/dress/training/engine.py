"""Training engines: what :func:`dress.training.loop.train` calls to prepare, split the batch, run
backward, clip, apply the step hook, checkpoint and hand the trained model back.

:class:`LocalEngine` -- one process, plain PyTorch: the loop dress always had (the same tensor
operations in the same order, the same checkpoints (:mod:`dress.training.checkpoint`)).

:class:`AccelerateEngine` -- a launched process (see :mod:`dress.training.distributed`); accelerate does the
parallelism, dress never writes its own:

* **DDP** (``torchrun`` / ``accelerate launch`` without an FSDP config):
  ``accelerator.prepare`` wraps the caller's model (its parameters stay the caller's). Each rank
  runs its share of the global batch (:func:`dress.training.distributed.rank_micro_batches`); gradients
  are averaged once per optimizer step (``no_sync`` on the other micro-batches); the weights stay
  identical on every rank, so the step hook (the proximal step) runs unchanged on each. Checkpoints
  are the single-process format (:mod:`dress.training.checkpoint`), written by the main process: a run
  resumes on any number of processes, one included.
* **FSDP2** (sharded; with CPU offload for ZeRO-3-sized runs): accelerate shards a *twin* of the
  caller's model -- a deep copy whose parameters start as views of the caller's, so it costs no
  memory -- while the caller's model waits on the CPU. The proximal step runs on the shards (a
  hook with ``on_dtensors``, e.g. :class:`dress.methods.dress.sharded.ProximalPenalty`); other step
  hooks and ``extra_loss`` (TRSP) need replicated weights and are refused. After the last step the
  trained weights are gathered one tensor at a time into the caller's parameters and the model
  returns to its device: everything after training (removal, LoRA merge, evaluation, saving) sees
  a plain model changed in place, as in one process.
  Checkpoints are the one format of :mod:`dress.training.checkpoint` (safetensors + JSON): the full weights
  and optimizer state are gathered to the main process (``torch.distributed.checkpoint.state_dict``
  with ``full_state_dict``) and written like a single process's; every rank loads them back into
  its shards, so any engine and any number of processes may resume any checkpoint. The FSDP2 path
  runs in the test suite on CPU (tests/cpu_fsdp.py).
"""

from __future__ import annotations

import contextlib
import copy
import gc
from collections.abc import Callable, Iterator

import torch
from torch import nn

from dress.errors import DressError
from dress.training.checkpoint import model_state_with_aliases, restore_rng, unflatten_optimizer
from dress.training.distributed import Runtime, current_runtime, rank_micro_batches
from dress.training.schedule import batch_indices


def make_optimizer(param_groups: list[dict], settings) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.95) over ``param_groups``: the optimizer of every training stage."""
    return torch.optim.AdamW(param_groups, lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.95))


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

    def clip(self, model: nn.Module, params: list[torch.Tensor]):
        """Clip the gradients; returns their total norm (before clipping)."""
        return torch.nn.utils.clip_grad_norm_(params, self.settings.max_grad_norm)

    def after_step(self, hook: Callable[[int, float], float | None], step: int, lr_t: float) -> float | None:
        return hook(step, lr_t)

    def finish(self, model: nn.Module) -> None:
        """After the last step: make ``model`` (the caller's) hold the trained weights."""
        return None

    def close(self) -> None:
        return None


class AccelerateEngine(LocalEngine):
    """A launched process: DDP or FSDP2 through accelerate (see module docstring)."""

    def __init__(self, runtime: Runtime, settings):
        from accelerate import Accelerator

        super().__init__(settings)
        self.runtime = runtime
        self.sharded = runtime.sharded
        per_step = settings.batch_size * settings.grad_accum
        try:  # a global batch that does not split over the processes is refused before anything is built
            rank_micro_batches(torch.arange(per_step), settings.batch_size, runtime.rank, runtime.world)
        except DressError as err:
            raise DressError(f"{settings.desc}: {err}") from None
        cpu = runtime.device.type == "cpu"
        # DDP keeps dress's own autocast (as in one process); sharded engines cast parameters themselves.
        mixed = "bf16" if settings.bf16 and not cpu and self.sharded else "no"
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=mixed)
        # dress scales the loss of each micro-batch itself (a launch flag or env value for
        # accumulation must not rescale the loss again).
        self.accelerator.gradient_accumulation_steps = 1
        self.home: torch.device | None = None
        self.model: nn.Module | None = None  # the caller's model, while its twin trains (sharded)
        self.twin: nn.Module | None = None
        self.prepared: nn.Module | None = None
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
                "data parallel (accelerate launch without an FSDP config, or torchrun)"
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
        optimizer = make_optimizer(groups, self.settings)
        prepared, optimizer = self.accelerator.prepare(self.twin, optimizer)
        self.prepared = prepared
        self.live = dict(self.accelerator.unwrap_model(prepared).named_parameters())
        return prepared, optimizer, [p for p in prepared.parameters() if p.requires_grad]

    def input_device(self, model: nn.Module) -> torch.device:
        return self.accelerator.device

    def micro_batches(self, step: int, n_samples: int) -> list[torch.Tensor]:
        everything = torch.cat([batch_indices(step, m, n_samples, self.settings) for m in range(self.settings.grad_accum)])
        return rank_micro_batches(everything, self.settings.batch_size, self.runtime.rank, self.runtime.world)

    def micro_step(self, model: nn.Module, last: bool):
        if self.runtime.engine == "ddp" and not last:
            return self.accelerator.no_sync(model)  # average gradients once per optimizer step
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def mean(self, values: list[float]) -> list[float]:
        return self.runtime.mean(values)

    def clip(self, model: nn.Module, params: list[torch.Tensor]):
        return self.accelerator.clip_grad_norm_(params, self.settings.max_grad_norm)

    def after_step(self, hook, step: int, lr_t: float) -> float | None:
        if not self.sharded:
            return hook(step, lr_t)
        return hook.on_dtensors(self.live, step, lr_t)

    @torch.no_grad()
    def finish(self, model: nn.Module) -> None:
        if not self.sharded:
            return
        own = dict(model.named_parameters())
        for name in self.trained:  # every rank, same order: each gather is a collective
            full = _full_tensor(self.live[name])
            own[name].data.copy_(full.to(own[name].device, own[name].dtype))
            del full

    def close(self) -> None:
        if self.model is not None:
            self.model.to(self.home)  # back where it was, trained or not
        self.model = None
        self.live.clear()
        self.twin = None
        self.prepared = None
        self.accelerator.free_memory()
        gc.collect()  # drop DDP's gradient hooks and the shards before the next stage

    # -- sharded checkpoints: the full state, in the one format of dress.training.checkpoint ---------------

    def full_state(self, optimizer, with_optimizer: bool):
        """``(model state, optimizer state_dict with indices, parameter names)`` gathered to the main
        process (other processes get empty values). Collective: every rank calls it."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.prepared, options=options)
        if not with_optimizer:
            return model_state, None, None
        by_name = get_optimizer_state_dict(self.prepared, _inner(optimizer), options=options)
        if not self.is_main:
            return model_state, None, None
        names = [name for group in by_name["param_groups"] for name in group["params"]]
        index = {name: i for i, name in enumerate(names)}
        as_indices = {
            "state": {index[name]: values for name, values in by_name["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in by_name["param_groups"]],
        }
        return model_state, as_indices, names

    def load_full_state(self, optimizer, loaded: dict) -> None:
        """Every rank: load a checkpoint of :mod:`dress.training.checkpoint` (written by any engine or
        number of processes) into the shards; each rank reads the same files."""
        model_state = model_state_with_aliases(loaded)
        description = loaded["state"].get("optimizer")
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        live = dict(self.accelerator.unwrap_model(self.prepared).state_dict())
        set_model_state_dict(self.prepared, {k: v for k, v in model_state.items() if k in live}, options=options)
        if description is not None:
            names = [name for group in description["param_groups"] for name in group["params"]]
            by_index = unflatten_optimizer(loaded["extra"], description, names)
            by_name = {
                "state": {names[i]: values for i, values in by_index["state"].items()},
                "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in by_index["param_groups"]],
            }
            set_optimizer_state_dict(self.prepared, _inner(optimizer), by_name, options=options)
        restore_rng(loaded["extra"])


def _inner(optimizer):
    """The torch optimizer under accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


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


def _full_tensor(param: torch.Tensor) -> torch.Tensor:
    """The whole (unsharded) value of a live parameter. Collective."""
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
