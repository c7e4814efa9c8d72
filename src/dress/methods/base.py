"""What a method receives and returns.

A method is a function ``apply(ctx: PruneContext) -> MethodOutcome``: it gets the dense model and
the calibration windows and returns the pruned model. The pipeline (:mod:`dress.pipeline`) does
everything common to all methods (loading, data, evaluation, recovery, saving). A method reports
its own diagnostics (``report``) and the structural facts of its result (``record``: hidden width
before/after and channels removed, or the layers removed) for ``dress.json``; ``record["method_summary"]``
holds the lines of its own that ``dress prune``'s summary prints (the summary knows no method).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dress.training.distributed import Runtime

log = logging.getLogger("dress")


@dataclass
class PruneContext:
    model: nn.Module
    tokenizer: object
    config: object  # dress.config.PruneConfig
    reg_part: torch.Tensor | None  # calibration windows for regularization / scoring
    rec_part: torch.Tensor | None  # calibration windows for recovery
    device: torch.device
    bf16: bool
    work_dir: Path  # checkpoints of training stages live under here
    resume: bool
    clock: object  # dress.pipeline.StageClock
    held_out_loss: Callable[[nn.Module], float] | None = None  # mean NLL on a few held-out windows
    runtime: Runtime = Runtime()  # this process in a launch; methods broadcast data-dependent choices
    distill: object = None  # dress.training.distill.Distillation for every training stage, or None

    def scoring_windows(self) -> torch.Tensor | None:
        """Every calibration window (both parts of the split), for data-aware *scoring* (channel or
        layer choice): a run that puts all data into recovery (``--split 0:1``) then scores exactly
        as one that regularizes on it. ``None`` when there is no data."""
        parts = [p for p in (self.reg_part, self.rec_part) if p is not None and p.shape[0] > 0]
        return torch.cat(parts) if parts else None

    def remove_measuring_gap(self, stage: str, remove: Callable[[], object], report: dict, goal: str = ""):
        """Run ``remove()`` (the structural cut) as stage ``stage`` and, when held-out text is
        available, store the prune gap (held-out loss after minus before, nats) in
        ``report["prune_gap_nats"]``. Returns what ``remove()`` returned."""
        loss_before = self.held_out_loss(self.model) if self.held_out_loss else None
        with self.clock.stage(stage):
            result = remove()
        if loss_before is not None:
            loss_after = self.held_out_loss(self.model)
            report["prune_gap_nats"] = loss_after - loss_before
            log.info(f"prune gap: {loss_after - loss_before:+.4f} nats "
                     f"(held-out loss {loss_before:.4f} -> {loss_after:.4f}{goal})")
        return result


@dataclass
class MethodOutcome:
    model: nn.Module
    report: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    keep_zero_structures: bool = False  # recovery keeps exactly-zero rows/columns of linears at zero
