"""Recovery fine-tuning: LoRA through peft on the recovery part, merged back into the weights
(or, with ``mode="full"``, plain fine-tuning of every parameter).

Contract: the returned model is a plain ``transformers`` model (no peft wrappers) whose logits
equal those of the trained LoRA model; only Linear layers named in ``targets`` that exist in the
model get adapters (OPT's ``out_proj``/``fc1``/``fc2`` are mapped from the Llama names).
"""

from __future__ import annotations

import warnings

from pathlib import Path

import torch
from torch import nn

from dress.errors import DressError
from dress.pruning.zero_structures import protect_zero_structures
from dress.training.config import RecoveryConfig
from dress.training.distill import Distillation
from dress.training.loop import TrainHistory, train

# Llama-style target names -> the same roles in other families.
_ROLE_ALIASES = {
    "o_proj": ("out_proj", "dense"),
    "gate_proj": (),
    "up_proj": ("fc1",),
    "down_proj": ("fc2",),
}


def lora_targets(model: nn.Module, requested: list[str]) -> list[str]:
    """Module-name suffixes from ``requested`` (with family aliases) that exist as nn.Linear."""
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    present.discard("lm_head")
    wanted = []
    for name in requested:
        for candidate in (name, *_ROLE_ALIASES.get(name, ())):
            if candidate in present and candidate not in wanted:
                wanted.append(candidate)
    if not wanted:
        raise DressError(f"none of the LoRA targets {requested} exist in this model; linear layers: {sorted(present)}")
    return wanted


def recover(
    model: nn.Module,
    samples: torch.Tensor,
    config: RecoveryConfig,
    *,
    seed: int = 0,
    bf16: bool = False,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    distill: Distillation | None = None,
    keep_zero_structures: bool = False,
) -> tuple[nn.Module, TrainHistory]:
    """Train LoRA adapters on ``samples`` and merge them; returns the merged model. With
    ``config.mode == "full"`` every parameter is trained instead, with the same schedule.
    ``distill``: distil from the dense model as well (:mod:`dress.training.distill`).
    ``keep_zero_structures``: zero rows and columns of every linear stay exactly zero
    (:mod:`dress.pruning.zero_structures`; LLM Surgeon's in-place zeros)."""
    if config.mode == "full":
        trained, label, finish = _unfrozen(model), "recover (full)", _frozen
    else:
        trained, label, finish = attach_lora(model, config), "recover (LoRA)", merge_lora
    if keep_zero_structures:
        protect_zero_structures(trained)
    settings = config.settings(config.steps, seed=seed + 1, bf16=bf16, desc=label)
    history = train(trained, samples, settings, None, checkpoint_dir, resume,
                    distill=distill)
    return finish(trained), history


def _unfrozen(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _frozen(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def attach_lora(model: nn.Module, config: RecoveryConfig) -> nn.Module:
    """Freeze ``model`` and wrap it in peft LoRA adapters on ``config.targets`` (only they train)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=lora_targets(model, config.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    for p in model.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():
        # peft reads the model's `is_gradient_checkpointing`, which transformers 5.x deprecates on every read
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, lora)


def merge_lora(peft_model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights: a plain model with the same logits, frozen, in eval mode."""
    merged = peft_model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged.eval()
