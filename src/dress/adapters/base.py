"""Architecture adapters: *facts* about how a model family touches the residual stream.

An adapter holds names, never behaviour that depends on a transformers ``forward``. Algorithms
(channel removal, regularization, layer removal) ask the adapter where things are and do the work
themselves. Module names are dotted paths: model-level ones from the ``*ForCausalLM`` root,
layer-level ones relative to one decoder layer.

Vocabulary (``nn.Linear.weight`` is ``[out, in]``):
  reader -- a Linear whose *input* is the (normed) residual stream: its input columns index channels.
  writer -- a Linear whose *output* is added to the residual stream: its output rows (and bias
            entries) index channels.
  norm   -- a norm module of width ``hidden_size`` (weight, maybe bias, index channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

NormKind = Literal["rms", "rms_one_plus", "layernorm"]


@dataclass(frozen=True)
class Adapter:
    model_types: tuple[str, ...]
    layers: str  # ModuleList of decoder layers
    embeddings: tuple[str, ...]  # nn.Embedding whose columns are channels (token, positional)
    layer_readers: tuple[str, ...]
    layer_writers: tuple[str, ...]
    layer_norms: tuple[str, ...]
    final_norm: str
    lm_head: str
    norm_kind: NormKind
    # Attention and MLP read the same normed input and both add to the residual (Phi).
    parallel_block: bool = False
    # Can a pruned model be a stock checkpoint? False when transformers derives the attention
    # width from hidden_size (OPT, Phi): those load through ``dress.load``.
    stock_after_prune: bool = True
    # Gemma multiplies token embeddings by sqrt(hidden_size), a constant derived from the config.
    scaled_embedding: bool = False
    # Per-layer config lists that must follow layer removal (e.g. Gemma3's ``layer_types``).
    per_layer_config_lists: tuple[str, ...] = ()

    # ---- lookups -------------------------------------------------------------------------
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers)

    def hidden_size(self, model: nn.Module) -> int:
        """Current residual width, read from the token embedding (OPT/Phi configs keep the
        original width after pruning; see ``stock_after_prune``)."""
        return int(model.get_submodule(self.embeddings[0]).weight.shape[1])

    def is_tied(self, model: nn.Module) -> bool:
        head = model.get_submodule(self.lm_head)
        return any(head.weight is model.get_submodule(name).weight for name in self.embeddings)

    def width_multiple(self, config) -> int:
        """Pruned widths must be a multiple of this (transformers' configs check hidden % heads)."""
        return int(config.num_attention_heads)

    def validate(self, model: nn.Module) -> None:
        """Raise DressError for variants of a supported family that the adapter cannot handle."""

    def named_readers(self, model: nn.Module):
        """(name, Linear) for every reader, lm_head last."""
        for i, layer in enumerate(self.decoder_layers(model)):
            for rel in self.layer_readers:
                yield f"{self.layers}.{i}.{rel}", layer.get_submodule(rel)
        yield self.lm_head, model.get_submodule(self.lm_head)

    def named_writers(self, model: nn.Module):
        for i, layer in enumerate(self.decoder_layers(model)):
            for rel in self.layer_writers:
                yield f"{self.layers}.{i}.{rel}", layer.get_submodule(rel)

    def named_norms(self, model: nn.Module):
        for i, layer in enumerate(self.decoder_layers(model)):
            for rel in self.layer_norms:
                yield f"{self.layers}.{i}.{rel}", layer.get_submodule(rel)
        yield self.final_norm, model.get_submodule(self.final_norm)

    def named_embeddings(self, model: nn.Module):
        for name in self.embeddings:
            yield name, model.get_submodule(name)


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def norm_has_bias(norm: nn.Module) -> bool:
    return isinstance(getattr(norm, "bias", None), torch.Tensor)
