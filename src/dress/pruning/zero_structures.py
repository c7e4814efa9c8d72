"""Keep exactly-zero rows and columns of linear layers at zero while a model trains.

A method that leaves zeros in place (LLM Surgeon's residual rows and columns) must not have them
filled in by recovery. :func:`protect_zero_structures` finds, in every ``nn.Linear`` (or peft
LoRA layer), the rows whose weights and bias are all zero and the columns that are all zero, sets
the matching trainable entries to zero and masks their gradients:

* full fine-tuning: the weight's zero rows and columns (and those rows' bias entries);
* LoRA (``dW = B A``): the columns of ``A`` at zero input columns, the rows of ``B`` at zero output
  rows, so the merged ``W + B A`` keeps both.

With a zero gradient, AdamW leaves such an entry at zero (its moments stay zero; decoupled weight
decay multiplies it). Returns the hook handles (remove them to stop protecting).
"""

from __future__ import annotations

import torch
from torch import nn


def _masks(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    w = linear.weight.detach()
    rows = (w == 0).all(dim=1)  # [out]
    if linear.bias is not None:
        rows &= linear.bias.detach() == 0
    cols = (w == 0).all(dim=0)  # [in]
    return rows, cols


def _pin(param: nn.Parameter, keep: torch.Tensor, handles: list) -> None:
    """Zero ``param`` where ``keep`` is False (broadcast) and mask its gradient the same way."""
    keep = keep.to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        param.mul_(keep)
    handles.append(param.register_hook(lambda grad, keep=keep: grad * keep))


def protect_zero_structures(model: nn.Module) -> list:
    handles: list = []
    adapters = {id(linear) for module in model.modules() if hasattr(module, "lora_A")
                for bank in (module.lora_A, module.lora_B) for linear in bank.values()}
    for module in model.modules():
        if id(module) in adapters:  # LoRA's own A and B (B starts at zero: not a removed structure)
            continue
        base = getattr(module, "base_layer", None)
        if isinstance(base, nn.Linear) and hasattr(module, "lora_A"):
            rows, cols = _masks(base)
            if not rows.any() and not cols.any():
                continue
            for name in module.lora_A:
                a = module.lora_A[name].weight  # [r, in]
                b = module.lora_B[name].weight  # [out, r]
                if a.requires_grad:
                    _pin(a, (~cols)[None, :], handles)
                if b.requires_grad:
                    _pin(b, (~rows)[:, None], handles)
            continue
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            rows, cols = _masks(module)
            if not rows.any() and not cols.any():
                continue
            _pin(module.weight, (~rows)[:, None] & (~cols)[None, :], handles)
            if module.bias is not None and module.bias.requires_grad:
                _pin(module.bias, ~rows, handles)
    return handles
