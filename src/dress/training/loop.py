"""One training loop for every stage that trains (regularization, recovery, TRSP).

Contract of :func:`train`:
  * batches are taken in a fixed order that depends only on ``seed`` and the step index, so a run
    resumed from a checkpoint continues to the same result as an uninterrupted one;
  * AdamW on the trainable parameters, linear warm-up then cosine decay to 10% of ``lr``;
  * ``after_step(step, lr_t)`` runs after every optimizer step (the proximal penalty lives there)
    and may return a float to log as the regularization loss;
  * ``extra_loss()`` (optional) runs after every micro-batch forward and returns a scalar tensor
    (or None) that is added to that micro-batch's LM loss before backward -- a penalty built from
    the forward pass (e.g. by hooks) or from parameters; it is logged as the regularization loss
    unless ``after_step`` returns one;
  * ``param_groups`` (optional): AdamW parameter groups instead of "every trainable parameter";
    a group's ``lr_scale`` multiplies the scheduled learning rate for that group;
  * every ``checkpoint_every`` steps (and at the end) model, optimizer and history are written
    atomically to ``checkpoint_dir``; a NaN/inf loss stops with a DressError and leaves the last
    good checkpoint in place;
  * bf16 autocast on CUDA when ``bf16``; fp32 otherwise;
  * with ``distill`` (a :class:`dress.training.distill.Distillation` of weight ``w``) each micro-batch's loss
    is ``(1 - w) * LM + w * KD``; ``lm_loss`` still logs the plain LM loss and ``distill_loss`` the
    KD term, so curves stay comparable with and without distillation.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dress.logs import progress
from dress.training.config import TrainSettings
from dress.training.distill import Distillation
from dress.training.engine import SHARDED_STATE, engine_for
from dress.training.schedule import learning_rate
from dress.errors import DressError


@dataclass
class TrainHistory:
    lm_loss: list[float] = field(default_factory=list)
    reg_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    distill_loss: list[float] = field(default_factory=list)  # empty without a teacher

    def as_dict(self) -> dict:
        out = {"lm_loss": self.lm_loss, "reg_loss": self.reg_loss, "lr": self.lr, "seconds": self.seconds}
        if self.distill_loss:
            out["distill_loss"] = self.distill_loss
        return out

    @classmethod
    def from_dict(cls, h: dict) -> TrainHistory:
        return cls(h["lm_loss"], h["reg_loss"], h["lr"], h["seconds"], h.get("distill_loss", []))


def train(
    model: nn.Module,
    samples: torch.Tensor,
    settings: TrainSettings,
    after_step: Callable[[int, float], float | None] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    extra_loss: Callable[[], torch.Tensor | None] | None = None,
    param_groups: list[dict] | None = None,
    distill: Distillation | None = None,
) -> TrainHistory:
    """Train ``model``'s trainable parameters on ``samples`` ``[n, seq]`` (causal LM loss).

    In a launched process (``torchrun``, ``accelerate launch``; see :mod:`dress.training.distributed`)
    the same call trains data-parallel or sharded through accelerate (:mod:`dress.training.engine`): every
    process passes the same ``samples`` and settings, each runs its share of the global batch, and
    ``model`` ends with the same weights as a single process would give it (up to float rounding).
    """
    if settings.steps == 0:
        return TrainHistory()
    if samples.shape[0] == 0:
        raise DressError(f"{settings.desc}: no training samples; raise --samples or change --split")
    if param_groups is None:
        param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if distill is not None and distill.weight <= 0:
        distill = None
    with engine_for(settings) as engine:
        engine.check_hooks(after_step, extra_loss, distill)
        history = _train_loop(engine, model, samples, settings, after_step, checkpoint_dir, resume, extra_loss,
                              param_groups, distill)
    return history


def _train_loop(engine, model, samples, settings, after_step, checkpoint_dir, resume, extra_loss, param_groups,
                distill):
    device = engine.input_device(model)
    if settings.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trained, optimizer, params = engine.prepare(model, param_groups)
    history = TrainHistory()
    start = 0
    if resume and checkpoint_dir is not None:
        start, history = _resume(engine, checkpoint_dir, model, optimizer)
    use_bf16 = settings.bf16 and device.type == "cuda"
    trained.train()
    t0 = time.perf_counter() - history.seconds
    bar = progress(range(start, settings.steps), desc=settings.desc, initial=start, total=settings.steps, dynamic_ncols=True,
                   disable=not engine.is_main)
    try:
        for step in bar:
            lr_t = learning_rate(step, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr_t * group.get("lr_scale", 1.0)
            lm_loss = 0.0
            kd_total = 0.0
            extra_total = 0.0
            micro_batches = engine.micro_batches(step, samples.shape[0])
            n_micro = len(micro_batches)  # settings.grad_accum in one process
            for micro, index in enumerate(micro_batches):
                ids = samples[index].to(device)
                with engine.micro_step(trained, last=micro == n_micro - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        out = trained(input_ids=ids, labels=ids, use_cache=False)
                        loss = out.loss / n_micro
                        if distill is not None:
                            kd = distill.loss(out.logits, ids) / n_micro
                            kd_total += float(kd.detach())
                    lm_loss += float(loss.detach())
                    if distill is not None:
                        loss = (1.0 - distill.weight) * loss + distill.weight * kd
                    extra = extra_loss() if extra_loss else None
                    if extra is not None:
                        extra = extra / n_micro
                        extra_total += float(extra.detach())
                        loss = loss + extra
                    engine.backward(loss)
            lm_loss, extra_total, kd_total = engine.mean([lm_loss, extra_total, kd_total])  # global means
            if not math.isfinite(lm_loss + extra_total + kd_total):
                where = f"; the last good checkpoint is in {checkpoint_dir}" if checkpoint_dir else ""
                raise DressError(f"{settings.desc}: loss became {lm_loss + extra_total} at step {step}{where}. Lower --lr and retry.")
            engine.clip(trained, params)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            reg = engine.after_step(after_step, step, lr_t) if after_step else None
            if reg is None and extra_loss is not None:
                reg = extra_total
            history.lm_loss.append(lm_loss)
            history.reg_loss.append(float(reg) if reg is not None else 0.0)
            history.lr.append(lr_t)
            postfix = {"lm": f"{lm_loss:.3f}"}
            if distill is not None:
                history.distill_loss.append(kd_total)
                postfix["kd"] = f"{kd_total:.3f}"
            if reg is not None:
                postfix["reg"] = f"{reg:.3g}"
            bar.set_postfix(postfix)
            done = step + 1
            if checkpoint_dir is not None and (
                done == settings.steps or (settings.checkpoint_every and done % settings.checkpoint_every == 0)
            ):
                history.seconds = time.perf_counter() - t0
                _checkpoint(engine, checkpoint_dir, model, optimizer, done, history)
        engine.finish(model)
    finally:
        bar.close()
        model.eval()
        if settings.gradient_checkpointing and hasattr(model, "gradient_checkpointing_disable"):
            model.gradient_checkpointing_disable()
    history.seconds = time.perf_counter() - t0
    return history


def _checkpoint(engine, directory: Path, model: nn.Module, optimizer, step: int, history: TrainHistory) -> None:
    """Replicated weights (one process, DDP): the main process writes ``state.pt``; sharded: every
    rank writes its part through accelerate (:meth:`dress.training.engine.AccelerateEngine.save_sharded`)."""
    if engine.sharded:
        engine.save_sharded(directory, step, history.as_dict())
    elif engine.is_main:
        _save_checkpoint(directory, model, optimizer, step, history)


def _resume(engine, directory: Path, model: nn.Module, optimizer) -> tuple[int, TrainHistory]:
    """``(first step, history)`` from the checkpoint in ``directory``, or ``(0, empty)`` if none."""
    replicated, sharded = (directory / "state.pt").is_file(), (directory / SHARDED_STATE).is_dir()
    if engine.sharded:
        if replicated and not sharded:
            raise DressError(f"{directory} holds a checkpoint of an unsharded run; resume it without FSDP/DeepSpeed")
        loaded = engine.load_sharded(directory)
        if loaded is None:
            return 0, TrainHistory()
        step, h = loaded
        return step, TrainHistory.from_dict(h)
    if sharded and not replicated:
        raise DressError(f"{directory} holds a sharded (FSDP/DeepSpeed) checkpoint; resume it with the same kind of launch")
    if replicated:
        return _load_checkpoint(directory, model, optimizer)
    return 0, TrainHistory()


def _save_checkpoint(directory: Path, model: nn.Module, optimizer, step: int, history: TrainHistory) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "state.pt.tmp"
    state = {
        "step": step,
        "model": {k: v for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "history": history.as_dict(),
    }
    torch.save(state, tmp)
    os.replace(tmp, directory / "state.pt")


def _load_checkpoint(directory: Path, model: nn.Module, optimizer) -> tuple[int, TrainHistory]:
    state = torch.load(directory / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), TrainHistory.from_dict(state["history"])


def clear_checkpoint(directory: Path | None) -> None:
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
