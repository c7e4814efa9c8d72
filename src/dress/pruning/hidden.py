"""Remove hidden (residual-stream) channels from a model, in place.

Contract of :func:`remove_hidden_channels`: every reader loses the input columns of the removed
channels, every writer its output rows and bias entries, every embedding its columns and every
norm its entries; the config's ``hidden_size`` becomes ``d'``; norms are corrected
(:mod:`dress.pruning.norms`) so that **if the removed channels were exactly zero in every writer,
embedding and norm, the logits do not change** (the exactness invariant, tested per family).
``head_dim`` and the number of (KV) heads are kept: attention width does not change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dress.adapters import Adapter, adapter_for, parameter_count
from dress.errors import DressError
from dress.pruning.norms import WidthPreservingLayerNorm, correct_rms_norm
from dress.pruning.tensors import slice_embedding, slice_linear_in, slice_linear_out, slice_norm
from dress.pruning.widths import DEFAULT_ALIGNMENT, WidthChoice, choose_width


@dataclass
class HiddenPruneResult:
    hidden_before: int
    hidden_after: int
    removed: list[int]
    params_before: int
    params_after: int


def pruned_width(config, ratio: float, adapter: Adapter, alignment: int = DEFAULT_ALIGNMENT) -> tuple[int, str | None]:
    """Width ``d'`` left after removing ``ratio`` of ``hidden_size`` (see :func:`width_choice`).
    Returns ``(d', note)``; ``note`` explains any rounding or later padding."""
    choice = width_choice(config, ratio, adapter, alignment)
    return choice.width, choice.note


def width_choice(config, ratio: float, adapter: Adapter, alignment: int = DEFAULT_ALIGNMENT) -> WidthChoice:
    """The width to keep: a multiple of the head count (stock configs) and, where one is near the
    asked ratio, of ``alignment`` (runtimes); :mod:`dress.pruning.widths` has the rule."""
    return choose_width(int(config.hidden_size), ratio, adapter.width_multiple(config), alignment)


def keep_indices(hidden_size: int, removed: Sequence[int]) -> torch.Tensor:
    removed_set = {int(c) for c in removed}
    if len(removed_set) != len(removed):
        raise DressError("channel list has duplicates")
    bad = [c for c in removed_set if not 0 <= c < hidden_size]
    if bad:
        raise DressError(f"channels {sorted(bad)[:5]} are outside 0..{hidden_size - 1}")
    return torch.tensor([c for c in range(hidden_size) if c not in removed_set], dtype=torch.long)


@torch.no_grad()
def remove_hidden_channels(model: nn.Module, removed: Sequence[int]) -> HiddenPruneResult:
    """Physically remove channels ``removed`` of the residual stream (see module docstring)."""
    adapter = adapter_for(model)
    config = model.config
    d = adapter.hidden_size(model)
    keep = keep_indices(d, removed)
    d_new = len(keep)
    multiple = adapter.width_multiple(config)
    if d_new == 0 or d_new % multiple:
        raise DressError(f"cannot keep {d_new} of {d} channels: the width must be a positive multiple of {multiple}")
    params_before = parameter_count(model)
    tied = adapter.is_tied(model)

    for _, embedding in adapter.named_embeddings(model):
        slice_embedding(embedding, keep)
    for name, reader in adapter.named_readers(model):
        if name == adapter.lm_head and tied:
            continue  # shares the (already sliced) embedding weight; re-tied below
        slice_linear_in(reader, keep)
    for _, writer in adapter.named_writers(model):
        slice_linear_out(writer, keep)
    for _, norm in adapter.named_norms(model):
        slice_norm(norm, keep)
    if tied:
        head = model.get_submodule(adapter.lm_head)
        head.weight = model.get_submodule(adapter.embeddings[0]).weight
        head.in_features = d_new

    _correct_norms(model, adapter, d, d_new)
    if adapter.scaled_embedding:
        _keep_embedding_scale(model, adapter, d, d_new, tied)
    _update_config(model, adapter, d_new)
    return HiddenPruneResult(d, d_new, sorted(int(c) for c in removed), params_before, parameter_count(model))


def _correct_norms(model: nn.Module, adapter: Adapter, d: int, d_new: int) -> None:
    if adapter.norm_kind == "layernorm":
        for name, norm in list(adapter.named_norms(model)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, WidthPreservingLayerNorm.from_layernorm(norm, full_width=_full_width(norm, d)))
        return
    rescale_rms_norms(model, adapter, d, d_new)


def rescale_rms_norms(model: nn.Module, adapter: Adapter, d: int, d_new: int) -> None:
    """After the residual stream went from width ``d`` to ``d_new`` (channels removed, or zero
    channels added by :mod:`dress.pruning.pad`): scale every stream RMSNorm's gain by
    ``sqrt(d/d')`` and its epsilon by ``d/d'`` (exact while the removed/added channels are zero),
    and give every other norm that used the config's epsilon the new one."""
    corrected = set()
    for _, norm in adapter.named_norms(model):
        correct_rms_norm(norm, d, d_new, one_plus=adapter.norm_kind == "rms_one_plus")
        corrected.add(id(norm))
    # The config has one epsilon for every RMSNorm; head-dim norms (Qwen3/Gemma3 q_norm, k_norm)
    # will be rebuilt from the new config on reload, so give them the same value now. Their
    # input width is unchanged; the effect is eps * (d/d' - 1) ~ 1e-6, far below float noise.
    old_eps = model.config.rms_norm_eps
    for module in model.modules():
        if id(module) in corrected:
            continue
        for attr in ("eps", "variance_epsilon"):
            if isinstance(getattr(module, attr, None), float) and math.isclose(getattr(module, attr), old_eps):
                setattr(module, attr, old_eps * d / d_new)


def _full_width(norm: nn.Module, d: int) -> int:
    # A norm pruned twice keeps the statistics of the *original* width.
    return getattr(norm, "full_width", d)


def _keep_embedding_scale(model: nn.Module, adapter: Adapter, d: int, d_new: int, tied: bool) -> None:
    """Gemma scales embeddings by sqrt(hidden_size) from the config. The smaller config gives
    sqrt(d'); scale the table by sqrt(d/d') so embeddings are unchanged. A tied head then sees the
    table sqrt(d/d') larger, which the final norm's gain absorbs.
    """
    embedding = model.get_submodule(adapter.embeddings[0])
    factor = math.sqrt(d / d_new)
    embedding.weight.mul_(factor)
    new_scale = d_new**0.5
    if hasattr(embedding, "embed_scale"):
        embedding.embed_scale.fill_(new_scale)
    if hasattr(embedding, "scalar_embed_scale"):
        embedding.scalar_embed_scale = new_scale
    if tied:
        final_norm = model.get_submodule(adapter.final_norm)
        final_norm.weight.copy_((1.0 + final_norm.weight) / factor - 1.0)


def _update_config(model: nn.Module, adapter: Adapter, d_new: int) -> None:
    config = model.config
    d = config.hidden_size
    if adapter.stock_after_prune:
        # Keep attention geometry explicit: some configs derive head_dim from hidden_size.
        head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
        config.head_dim = head_dim
        config.hidden_size = d_new
        if hasattr(config, "rms_norm_eps"):
            config.rms_norm_eps = config.rms_norm_eps * d / d_new
    # OPT/Phi keep the original config (their attention width is derived from hidden_size); the
    # pruned width is recorded in dress.json and re-applied by dress.load.
