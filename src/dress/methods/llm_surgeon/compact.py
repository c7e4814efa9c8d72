"""Turn LLM Surgeon's zeros into a smaller model, exactly, where the architecture allows it.

The official code only masks. Two kinds of structure can be cut without changing any logit:

* **FFN neuron j** of a layer is dead when a row ``j`` of any FFN input linear (gate or up; fc1)
  is zero (bias entry included; every activation used maps 0 to 0) or column ``j`` of the down
  projection is zero. Its rows and column go together.
* **KV group g** is dead when every query head ``h`` that reads it contributes nothing: for each
  head dimension ``d``, the output projection's column ``(h, d)`` is zero or ``v``'s row ``(g, d)``
  is zero (bias included). The group's k and v rows and its query heads' q rows and o columns go.
  Only whole groups: stock attention repeats each KV head a fixed number of times.

Everything else (residual rows and columns, partial heads) stays as zeros. At least one neuron and
one group stay in every layer (an empty Linear would break the reshapes). Widths then differ per
layer, which no stock config can express: the record's ``rebuild`` entry lets ``dress.load`` give a
freshly built model the same shapes before loading the weights (:func:`rebuild`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dress.adapters import Adapter, adapter_for
from dress.pruning.tensors import slice_linear_in, slice_linear_out

REBUILD = "llm-surgeon"  # the registry key dress.json names (MethodSpec.rebuild)


@dataclass(frozen=True)
class LayerRoles:
    """Names of one layer's linears, relative to the layer (derived from the adapter)."""

    q: str
    k: str
    v: str
    o: str
    ffn_in: tuple[str, ...]  # (gate, up) or (fc1,)
    down: str

    @property
    def attention(self) -> str:
        return self.q.rsplit(".", 1)[0]


def layer_roles(adapter: Adapter) -> LayerRoles:
    readers, writers = adapter.layer_readers, adapter.layer_writers
    return LayerRoles(q=readers[0], k=readers[1], v=readers[2], o=writers[0], ffn_in=tuple(readers[3:]), down=writers[1])


def zero_rows(linear: nn.Linear) -> torch.Tensor:
    """``[out]`` bool: rows whose weights and bias entry are all exactly zero."""
    dead = (linear.weight == 0).all(dim=1)
    if linear.bias is not None:
        dead &= linear.bias == 0
    return dead


def zero_cols(linear: nn.Linear) -> torch.Tensor:
    """``[in]`` bool: input columns that are all exactly zero."""
    return (linear.weight == 0).all(dim=0)


def head_dim_of(layer: nn.Module, roles: LayerRoles) -> int:
    attention = layer.get_submodule(roles.attention)
    return int(attention.head_dim)


def dead_ffn_neurons(layer: nn.Module, roles: LayerRoles) -> torch.Tensor:
    """``[intermediate]`` bool (see module doc)."""
    dead = zero_cols(layer.get_submodule(roles.down)).clone()
    for name in roles.ffn_in:
        dead |= zero_rows(layer.get_submodule(name))
    return dead


def dead_kv_groups(layer: nn.Module, roles: LayerRoles) -> torch.Tensor:
    """``[kv heads]`` bool (see module doc)."""
    hd = head_dim_of(layer, roles)
    q = layer.get_submodule(roles.q)
    k = layer.get_submodule(roles.k)
    heads, kv = q.out_features // hd, k.out_features // hd
    per_group = heads // kv
    o_zero = zero_cols(layer.get_submodule(roles.o)).view(heads, hd)  # [H, hd]
    v_zero = zero_rows(layer.get_submodule(roles.v)).view(kv, hd)  # [K, hd]
    silent = o_zero | v_zero.repeat_interleave(per_group, dim=0)  # [H, hd]
    head_dead = silent.all(dim=1)  # [H]
    return head_dead.view(kv, per_group).all(dim=1)


def _keep_at_least_one(dead: torch.Tensor) -> torch.Tensor:
    keep = torch.nonzero(~dead).flatten()
    return keep if keep.numel() else torch.zeros(1, dtype=torch.long)


@torch.no_grad()
def compact_layer(layer: nn.Module, roles: LayerRoles) -> dict:
    """Cut the dead FFN neurons and KV groups of one layer in place; returns its new widths."""
    hd = head_dim_of(layer, roles)
    keep_n = _keep_at_least_one(dead_ffn_neurons(layer, roles).cpu())
    for name in roles.ffn_in:
        slice_linear_out(layer.get_submodule(name), keep_n)
    slice_linear_in(layer.get_submodule(roles.down), keep_n)

    q, k = layer.get_submodule(roles.q), layer.get_submodule(roles.k)
    heads, kv = q.out_features // hd, k.out_features // hd
    per_group = heads // kv
    keep_g = _keep_at_least_one(dead_kv_groups(layer, roles).cpu())
    kv_rows = (keep_g[:, None] * hd + torch.arange(hd)).flatten()
    kept_heads = (keep_g[:, None] * per_group + torch.arange(per_group)).flatten()
    q_rows = (kept_heads[:, None] * hd + torch.arange(hd)).flatten()
    slice_linear_out(q, q_rows)
    slice_linear_out(k, kv_rows)
    slice_linear_out(layer.get_submodule(roles.v), kv_rows)
    slice_linear_in(layer.get_submodule(roles.o), q_rows)
    widths = {"ffn": int(keep_n.numel()), "heads": int(kept_heads.numel()), "kv_heads": int(keep_g.numel())}
    _set_head_counts(layer.get_submodule(roles.attention), widths)
    return widths


def _set_head_counts(attention: nn.Module, widths: dict) -> None:
    # Stock attention infers the head count from the tensor (view(..., -1, head_dim)) except OPT,
    # which reads ``num_heads``; the GQA ratio (num_key_value_groups) is unchanged by construction.
    for attr, key in (("num_heads", "heads"), ("num_key_value_heads", "kv_heads")):
        if isinstance(getattr(attention, attr, None), int):
            setattr(attention, attr, widths[key])


def compact(model: nn.Module) -> list[dict]:
    """Cut every dead FFN neuron and KV group (see module doc); returns per-layer widths."""
    adapter = adapter_for(model)
    roles = layer_roles(adapter)
    return [compact_layer(layer, roles) for layer in adapter.decoder_layers(model)]


@torch.no_grad()
def rebuild(model: nn.Module, args: dict) -> None:
    """Give a model built from the (unchanged) saved config the per-layer widths in ``args``
    (``{"layers": [{"ffn": n, "heads": h, "kv_heads": k}, ...]}``); weights are loaded afterwards."""
    adapter = adapter_for(model)
    roles = layer_roles(adapter)
    for layer, widths in zip(adapter.decoder_layers(model), args["layers"], strict=True):
        hd = head_dim_of(layer, roles)
        keep_n = torch.arange(int(widths["ffn"]))
        for name in roles.ffn_in:
            slice_linear_out(layer.get_submodule(name), keep_n)
        slice_linear_in(layer.get_submodule(roles.down), keep_n)
        q_rows = torch.arange(int(widths["heads"]) * hd)
        kv_rows = torch.arange(int(widths["kv_heads"]) * hd)
        slice_linear_out(layer.get_submodule(roles.q), q_rows)
        slice_linear_out(layer.get_submodule(roles.k), kv_rows)
        slice_linear_out(layer.get_submodule(roles.v), kv_rows)
        slice_linear_in(layer.get_submodule(roles.o), q_rows)
        _set_head_counts(layer.get_submodule(roles.attention), widths)
