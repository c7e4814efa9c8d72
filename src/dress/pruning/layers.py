"""Remove whole decoder layers from a model, in place, leaving a stock checkpoint.

Contract of :func:`remove_layers`: the decoder ``ModuleList`` keeps the other layers in their
order; every module that carries a ``layer_idx`` (attention, and the layer itself in some
families) is renumbered ``0..L'-1`` so the KV cache indexes the right slots; the config gets
``num_hidden_layers = L'`` and every per-layer config list is filtered the same way
(``layer_types`` of Gemma3/Qwen2/Qwen3, and the adapter's ``per_layer_config_lists``); Qwen's
``max_window_layers`` (full attention below it) is recounted over the kept layers. Widths are
untouched, so a model whose hidden width dress never reduced saves as a stock checkpoint that
``AutoModelForCausalLM.from_pretrained`` reloads with identical logits -- for every family,
OPT and Phi included.

Invariant (tested per family): a layer whose residual update is zero can be removed without
changing any logit.

:func:`layers_for_ratio` maps a pruning ratio (a fraction of the *parameters*) to a number of
layers; :func:`removal_note` states the mapping in words for logs and ``dress.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from dress.adapters import adapter_for, parameter_count
from dress.errors import DressError

# Per-layer config lists some families carry whether or not their adapter names them.
_COMMON_PER_LAYER_LISTS = ("layer_types",)


@dataclass
class LayerRemovalResult:
    removed: list[int]  # original indices, ascending
    layers_before: int
    layers_after: int
    params_before: int
    params_after: int

    @property
    def removed_param_fraction(self) -> float:
        return 1.0 - self.params_after / self.params_before


def layer_parameter_counts(model: nn.Module) -> list[int]:
    """Parameters of each decoder layer (shared tensors counted once per layer)."""
    return [parameter_count(layer) for layer in adapter_for(model).decoder_layers(model)]


def layers_for_ratio(model: nn.Module, ratio: float) -> int:
    """How many layers to remove so that the removed *parameters* are closest to ``ratio`` of the
    model's (embeddings and head included; they stay). Ties go to fewer layers. At least one layer
    is removed and at least one kept; a ratio no layer count can approach raises DressError."""
    if not 0.0 < ratio < 1.0:
        raise DressError(f"--ratio must be strictly between 0 and 1 (got {ratio}); e.g. --ratio 0.25")
    counts = layer_parameter_counts(model)
    n_layers = len(counts)
    if n_layers < 2:
        raise DressError(f"the model has {n_layers} decoder layer(s); removing layers needs at least 2")
    total = parameter_count(model)
    per_layer = sum(counts) / n_layers  # layers of one model have equal sizes; the mean is exact then
    best = min(range(1, n_layers), key=lambda k: (abs(k * per_layer / total - ratio), k))
    return best


def removal_note(model: nn.Module, n_remove: int) -> str:
    """E.g. ``"removing 9 of 30 layers = 23.7% of parameters"`` (before removal)."""
    counts = layer_parameter_counts(model)
    total = parameter_count(model)
    fraction = n_remove * (sum(counts) / len(counts)) / total
    return f"removing {n_remove} of {len(counts)} layers = {fraction:.1%} of parameters"


def check_layer_indices(n_layers: int, layer_indices: Sequence[int]) -> list[int]:
    """Sorted, validated indices: unique, in range, and not every layer."""
    indices = [int(i) for i in layer_indices]
    if len(set(indices)) != len(indices):
        raise DressError(f"layer list {indices} has duplicates")
    bad = [i for i in indices if not 0 <= i < n_layers]
    if bad:
        raise DressError(f"layers {bad} are outside 0..{n_layers - 1}")
    if len(indices) >= n_layers:
        raise DressError(f"cannot remove all {n_layers} layers; keep at least one")
    return sorted(indices)


def remove_layers(model: nn.Module, layer_indices: Sequence[int]) -> LayerRemovalResult:
    """Delete decoder layers ``layer_indices`` (original numbering) in place; see module docstring."""
    adapter = adapter_for(model)
    layers = adapter.decoder_layers(model)
    n_before = len(layers)
    removed = check_layer_indices(n_before, layer_indices)
    params_before = parameter_count(model)
    gone = set(removed)
    keep = [i for i in range(n_before) if i not in gone]

    parent_name, _, child = adapter.layers.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.ModuleList([layers[i] for i in keep]))
    for new_index, layer in enumerate(adapter.decoder_layers(model)):
        _renumber(layer, new_index)
    _update_config(model, adapter.per_layer_config_lists, keep, n_before)
    return LayerRemovalResult(removed, n_before, len(keep), params_before, parameter_count(model))


def _renumber(layer: nn.Module, index: int) -> None:
    # Attention modules index the KV cache by ``layer_idx``; Gemma3's layer keeps one too.
    for module in layer.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = index


def _update_config(model: nn.Module, adapter_lists: Sequence[str], keep: list[int], n_before: int) -> None:
    config = model.config
    config.num_hidden_layers = len(keep)
    for name in dict.fromkeys((*_COMMON_PER_LAYER_LISTS, *adapter_lists)):
        values = getattr(config, name, None)
        if values is None:
            continue
        if len(values) != n_before:
            raise DressError(
                f"config.{name} has {len(values)} entries but the model has {n_before} layers; "
                "cannot tell which entries belong to the removed layers"
            )
        setattr(config, name, [values[i] for i in keep])
    window_layers = getattr(config, "max_window_layers", None)
    if isinstance(window_layers, int):
        # Qwen2/3: layers below max_window_layers use full attention; count the kept ones.
        config.max_window_layers = sum(1 for i in keep if i < window_layers)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        # Qwen2/3 cache this at construction; keep it equal to what a reload computes.
        for module in model.modules():
            if isinstance(getattr(module, "has_sliding_layers", None), bool):
                module.has_sliding_layers = "sliding_attention" in layer_types
