"""Pruning methods, by name.

A method is a function ``apply(ctx: PruneContext) -> MethodOutcome``: it receives the dense model
and the calibration data and returns the pruned model. The pipeline (:mod:`dress.pipeline`) does
everything common to all methods (loading, data, evaluation, recovery, saving). A method reports
its own diagnostics (``report``) and the structural facts of its result (``record``: e.g. hidden
width before/after and channels removed, or the layers removed) for ``dress.json``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dress.distributed import Runtime

# name -> "module:function" under dress.methods, imported on use.
METHODS: dict[str, str] = {
    "direct": "width:direct",
    "dress": "width:dress",
    "fpr": "width:fpr",
    "slicegpt": "slicegpt:slicegpt",
    "sleb": "depth:sleb",
    "shortgpt": "depth:shortgpt",
    "trsp": "trsp:trsp",
    "llm-surgeon": "llm_surgeon.method:llm_surgeon",
}


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
    log: Callable[[str], None] = print
    held_out_loss: Callable[[nn.Module], float] | None = None  # mean NLL on a few held-out windows
    runtime: Runtime = Runtime()  # this process in a launch; methods broadcast data-dependent choices
    distill: object = None  # dress.distill.Distillation for every training stage, or None

    def scoring_windows(self) -> torch.Tensor | None:
        """Every calibration window (both parts of the split), for data-aware *scoring* (channel or
        layer choice): a run that puts all data into recovery (``--split 0:1``) then scores exactly
        as one that regularizes on it. ``None`` when there is no data."""
        parts = [p for p in (self.reg_part, self.rec_part) if p is not None and p.shape[0] > 0]
        return torch.cat(parts) if parts else None


@dataclass
class MethodOutcome:
    model: nn.Module
    report: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    keep_zero_structures: bool = False  # recovery keeps exactly-zero rows/columns of linears at zero


def method_function(name: str) -> Callable[[PruneContext], MethodOutcome]:
    from dress.errors import DressError

    if name not in METHODS:
        raise DressError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    module_name, func = METHODS[name].split(":")
    return getattr(importlib.import_module(f"dress.methods.{module_name}"), func)


def method_needs_data(config) -> bool:
    """Whether the run needs calibration samples (training, data-aware scoring, or recovery)."""
    return config.method != "direct" or config.selection == "activation" or config.recovery.enabled
