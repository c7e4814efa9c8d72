"""Add zero channels to the residual stream, in place: the inverse of channel removal, for runtimes.

Why: llama.cpp quantizes a matrix only when its row length is a multiple of 32 (K-quants: 256,
with a 32-block fallback), and a stock Llama-family config needs ``hidden_size`` to be a multiple
of the head count. Where both cannot hold near the asked ratio (SmolLM2: 9 heads, width 432), the
pruned checkpoint keeps the stock width and the export to runtimes pads it (see
:mod:`dress.pruning.widths` and :mod:`dress.export`).

Contract of :func:`pad_hidden_channels`: appends ``width - d'`` channels at the end of the stream;
every new embedding column, reader input column, writer output row (and bias entry) and norm
entry is zero (Gemma's ``(1 + w)`` gain: ``w = -1``), so the new channels stay exactly zero through
the network; each RMSNorm's gain is scaled by ``sqrt(d'/W)`` and its epsilon by ``d'/W``
(``rms_W(x) = sqrt(d'/W) * rms_d'(x)`` when the extra entries are zero). Then **no logit changes**
beyond float noise. LayerNorm families (OPT, Phi) are refused: their pruned checkpoints already
need dress's own loader, which no runtime has.
"""

from __future__ import annotations

import torch
from torch import nn

from dress.adapters import adapter_for
from dress.errors import DressError
from dress.pruning.hidden import _keep_embedding_scale, rescale_rms_norms


def _grow(module: nn.Module, name: str, axis: int, extra: int, fill: float = 0.0) -> None:
    old = getattr(module, name)
    shape = list(old.shape)
    shape[axis] = extra
    pad = torch.full(shape, fill, dtype=old.dtype, device=old.device)
    setattr(module, name, nn.Parameter(torch.cat([old.data, pad], dim=axis).contiguous(), requires_grad=old.requires_grad))


@torch.no_grad()
def pad_hidden_channels(model: nn.Module, width: int) -> int:
    """Widen the residual stream of ``model`` to ``width`` with zero channels (module docstring).
    Returns the width before. ``config.hidden_size`` becomes ``width``; ``head_dim`` stays explicit."""
    adapter = adapter_for(model)
    if adapter.norm_kind == "layernorm":
        raise DressError(
            f"padding the width of a {model.config.model_type} model is not supported (LayerNorm families load "
            "only with dress.load, which runtimes do not have)"
        )
    d = adapter.hidden_size(model)
    if width < d:
        raise DressError(f"cannot pad width {d} down to {width}")
    if width == d:
        return d
    extra = width - d
    tied = adapter.is_tied(model)
    gain_fill = -1.0 if adapter.norm_kind == "rms_one_plus" else 0.0

    for _, embedding in adapter.named_embeddings(model):
        _grow(embedding, "weight", 1, extra)  # [vocab, d] -> [vocab, W]
        embedding.embedding_dim = width
    for name, reader in adapter.named_readers(model):
        if name == adapter.lm_head and tied:
            continue
        _grow(reader, "weight", 1, extra)  # [out, d] -> [out, W]
        reader.in_features = width
    for _, writer in adapter.named_writers(model):
        _grow(writer, "weight", 0, extra)  # [d, in] -> [W, in]
        if writer.bias is not None:
            _grow(writer, "bias", 0, extra)
        writer.out_features = width
    for _, norm in adapter.named_norms(model):
        _grow(norm, "weight", 0, extra, fill=gain_fill)
        if hasattr(norm, "dim"):
            norm.dim = width
    if tied:
        head = model.get_submodule(adapter.lm_head)
        head.weight = model.get_submodule(adapter.embeddings[0]).weight
        head.in_features = width

    rescale_rms_norms(model, adapter, d, width)  # the same correction as removal, from width d to W
    if adapter.scaled_embedding:
        _keep_embedding_scale(model, adapter, d, width, tied)
    config = model.config
    config.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    _set_unchecked(config, "hidden_size", width)
    if hasattr(config, "rms_norm_eps"):
        config.rms_norm_eps = config.rms_norm_eps * d / width
    return d


def _set_unchecked(config, name: str, value) -> None:
    """Set a config attribute even where transformers validates it (hidden % heads): a padded
    width is for runtimes, which read ``head_dim`` and do not need that rule."""
    try:
        setattr(config, name, value)
    except (ValueError, TypeError):
        object.__setattr__(config, name, value)
