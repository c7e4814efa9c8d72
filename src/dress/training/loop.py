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
  * every ``checkpoint_every`` steps model, optimizer and history are written atomically to
    ``checkpoint_dir``, and at the end of the stage the weights and history alone (format:
    :mod:`dress.training.checkpoint`, safetensors + JSON, no pickles); a NaN/inf loss stops with a
    DressError and leaves the last good checkpoint in place;
  * bf16 autocast (CUDA or CPU) when ``bf16``; fp32 otherwise;
  * with ``distill`` (a :class:`dress.training.distill.Distillation` of weight ``w``) each micro-batch's loss
    is ``(1 - w) * LM + w * KD``; ``lm_loss`` still logs the plain LM loss and ``distill_loss`` the
    KD term, so curves stay comparable with and without distillation.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dress.errors import DressError
from dress.logs import progress
from dress.training.checkpoint import (STATE_JSON, flatten_optimizer, load_into, optimizer_param_names, read_checkpoint,
                                       write_checkpoint)
from dress.training.config import TrainSettings
from dress.training.distill import Distillation
from dress.training.engine import engine_for
from dress.training.run_identity import active_run
from dress.training.schedule import learning_rate


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


def _enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing: transformers' ``activation_checkpointing_enable`` where
    it exists (5.x; the older ``gradient_checkpointing_enable`` warns that it goes in v6)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _disable_checkpointing(model) -> None:
    for name in ("activation_checkpointing_disable", "gradient_checkpointing_disable"):
        if hasattr(model, name):
            getattr(model, name)()
            return


def _train_loop(engine, model, samples, settings, after_step, checkpoint_dir, resume, extra_loss, param_groups,
                distill):
    device = engine.input_device(model)
    if settings.gradient_checkpointing:
        _enable_checkpointing(model)
    trained, optimizer, params = engine.prepare(model, param_groups)
    history = TrainHistory()
    start = 0
    if resume and checkpoint_dir is not None:
        start, history = _resume(engine, checkpoint_dir, model, optimizer, settings)
    use_bf16 = settings.bf16  # bf16 autocast on CUDA and on CPU alike
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
                raise DressError(_diverged(settings, step, lm_loss + extra_total + kd_total, checkpoint_dir))
            norm = engine.clip(trained, params)
            if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor (collective on every rank)
                norm = norm.full_tensor()
            if norm is not None and not math.isfinite(float(norm)):  # stop before a NaN step reaches the weights
                raise DressError(_diverged(settings, step, float(norm), checkpoint_dir, what="the gradient norm"))
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
                _checkpoint(engine, checkpoint_dir, model, optimizer, done, history, settings)
        engine.finish(model)
    finally:
        bar.close()
        model.eval()
        if settings.gradient_checkpointing:
            _disable_checkpointing(model)
    history.seconds = time.perf_counter() - t0
    return history


def _checkpoint(engine, directory: Path, model: nn.Module, optimizer, step: int, history: TrainHistory,
                settings: TrainSettings) -> None:
    """One checkpoint format for every engine (:mod:`dress.training.checkpoint`): safetensors + JSON,
    written by the main process; a sharded engine gathers the full state first (collective).
    The optimizer state only at the user's interval; the last step of a stage writes the weights
    alone (a finished stage never needs its optimizer again)."""
    final = step == settings.steps
    if engine.sharded:
        model_state, optim_state, names = engine.full_state(optimizer, with_optimizer=not final)
    else:
        model_state = model.state_dict()
        optim_state = None if final else optimizer.state_dict()
        names = None if final else optimizer_param_names(model, optimizer)
    if not engine.is_main:
        return
    if not all(torch.isfinite(t).all() for t in model_state.values() if t.is_floating_point()):
        # never replace the last good checkpoint with non-finite weights
        raise DressError(_diverged(settings, step - 1, float("nan"), directory, what="the weights"))
    tensors = description = None
    if optim_state is not None:
        tensors, description = flatten_optimizer(optim_state, names)
    run = active_run()
    write_checkpoint(directory, step=step, model_state=model_state, optimizer_tensors=tensors,
                     optimizer_description=description, history=history.as_dict(),
                     fingerprint=run.fingerprint if run is not None else None, stage=settings.desc)


def _resume(engine, directory: Path, model: nn.Module, optimizer, settings: TrainSettings) -> tuple[int, TrainHistory]:
    """``(first step, history)`` from the checkpoint in ``directory``, or ``(0, empty)`` if none.
    Every process reads the same files (safetensors + JSON only, see :mod:`dress.training.checkpoint`)."""
    run = active_run()
    loaded = read_checkpoint(directory, run.fingerprint if run is not None else None, stage=settings.desc)
    if loaded is None:
        return 0, TrainHistory()
    step = int(loaded["state"]["step"])
    if step > settings.steps:
        raise DressError(f"{directory} holds step {step} of a stage with {settings.steps} steps; delete it to restart")
    if step < settings.steps and loaded["state"].get("optimizer") is None:
        raise DressError(f"{directory} holds no optimizer state at step {step}; delete it to restart this stage")
    if engine.sharded:
        engine.load_full_state(optimizer, loaded)
    else:
        load_into(model, optimizer, loaded)
    return step, TrainHistory.from_dict(loaded["state"]["history"])


def _diverged(settings: TrainSettings, step: int, loss: float, checkpoint_dir: Path | None,
              what: str = "the training loss") -> str:
    kept = ""
    if checkpoint_dir is not None and (checkpoint_dir / STATE_JSON).is_file():
        import json

        good = json.loads((checkpoint_dir / STATE_JSON).read_text()).get("step")
        kept = f"; the last good checkpoint (step {good}) is kept in {checkpoint_dir}"
    became = f"became {loss}" if what != "the weights" else "became NaN/inf"
    return (f"{settings.desc}: {what} {became} at step {step + 1} (training diverged){kept}. "
            "Lower the stage's learning rate (e.g. halve --lr / --rft-lr / --trsp-lr) and rerun with --overwrite")


def clear_checkpoint(directory: Path | None) -> None:
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
