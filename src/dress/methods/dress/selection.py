"""Which hidden channels to remove.

``last``        the paper's fixed index set: the last ``k`` channels.
``activation``  the ``k`` channels with the smallest mean |activation| of the residual stream
                over calibration tokens (every layer's input and the last layer's output). This
                keeps massive-activation channels, which a fixed set may hit (SmolLM2: 507, 521).
``weight``      the ``k`` channels with the smallest summed ℓ2 norm over all their groups (reader
                columns, writer rows, embeddings), no data needed.
"""

from __future__ import annotations

import torch
from torch import nn

from dress.adapters import adapter_for
from dress.errors import DressError

SELECTIONS = ("last", "activation", "weight")


def select_channels(model: nn.Module, n_remove: int, selection: str, calibration: torch.Tensor | None = None) -> list[int]:
    """Indices of the ``n_remove`` channels to remove, sorted."""
    d = adapter_for(model).hidden_size(model)
    if selection == "last":
        return list(range(d - n_remove, d))
    if selection == "activation":
        if calibration is None or calibration.shape[0] == 0:
            raise DressError("--selection activation needs calibration data (raise --samples), "
                             "or choose --selection weight or last")
        scores = activation_scores(model, calibration)
    elif selection == "weight":
        scores = weight_scores(model)
    else:
        raise DressError(f"unknown --selection {selection!r}; choose one of {', '.join(SELECTIONS)}")
    return sorted(torch.argsort(scores)[:n_remove].tolist())


@torch.no_grad()
def activation_scores(model: nn.Module, calibration: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Mean |x| per residual channel over all tokens of ``calibration`` ``[n, seq]`` at every
    layer boundary. Returns ``[d]`` float32 on CPU."""
    adapter = adapter_for(model)
    layers = adapter.decoder_layers(model)
    device = next(model.parameters()).device
    total = torch.zeros(adapter.hidden_size(model), dtype=torch.float64, device=device)
    count = 0

    def accumulate(x: torch.Tensor) -> None:
        nonlocal total, count
        flat = x.detach().reshape(-1, x.shape[-1])
        total += flat.abs().sum(0, dtype=torch.float64)
        count += flat.shape[0]

    def on_input(_module, args, kwargs):
        accumulate(args[0] if args else kwargs["hidden_states"])

    def on_output(_module, _args, output):
        accumulate(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_pre_hook(on_input, with_kwargs=True) for layer in layers]
    handles.append(layers[-1].register_forward_hook(on_output))
    try:
        for start in range(0, calibration.shape[0], batch_size):
            model(input_ids=calibration[start : start + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return (total / max(count, 1)).float().cpu()


@torch.no_grad()
def weight_scores(model: nn.Module) -> torch.Tensor:
    adapter = adapter_for(model)
    d = adapter.hidden_size(model)
    score = torch.zeros(d, dtype=torch.float64)
    for _, reader in adapter.named_readers(model):
        score += reader.weight.detach().double().pow(2).sum(0).cpu()
    for _, writer in adapter.named_writers(model):
        score += writer.weight.detach().double().pow(2).sum(1).cpu()
    for _, embedding in adapter.named_embeddings(model):
        score += embedding.weight.detach().double().pow(2).sum(0).cpu()
    return score.sqrt().float()
