"""A parameter budget shared by every method: remove at least a share of the model's parameters.

Each method can produce only some output sizes: a width method keeps a multiple of the head count,
a depth method whole layers, LLM Surgeon any number of zeroed entries. A method lists them as
:class:`Shape` objects (the ``--ratio`` that makes the shape, and the parameters it keeps, counted
by the same functions the cut uses), and :func:`fit_budget` picks the one whose kept count is
**nearest** to the budget's, ``floor(dense * (1 - share))`` (a tie goes to the smaller model). Every
row of a comparison reports how far it landed from the budget, above or below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from dress.adapters import adapter_for, parameter_count
from dress.errors import DressError
from dress.methods.dress.penalty import channel_groups  # the same groups the regularizer and the cut use
from dress.pruning.layers import layer_parameter_counts
from dress.pruning.widths import reachable_widths


@dataclass(frozen=True)
class Shape:
    """One output a method can produce: the ``ratio`` that makes it and the ``params`` it keeps."""

    ratio: float
    params: int
    knob: str  # what the method changes, for people: "hidden width 432", "10 of 30 layers"


@dataclass(frozen=True)
class ParameterBudget:
    """The shape chosen for a budget of removing at least ``share`` of ``dense`` parameters."""

    share: float
    dense: int
    shape: Shape

    @property
    def target(self) -> int:
        return math.floor(self.dense * (1.0 - self.share))

    @property
    def distance(self) -> int:
        """Kept parameters minus the budget's (negative: below it)."""
        return self.shape.params - self.target

    def as_record(self) -> dict:
        return {"share": self.share, "dense_params": self.dense, "target_params": self.target,
                "planned_params": self.shape.params, "distance_params": self.distance,
                "distance_share": self.distance / self.dense, "knob": self.shape.knob, "ratio": self.shape.ratio}

    def describe(self) -> str:
        return (f"parameter budget: remove {self.share:.1%} of {self.dense / 1e6:.1f}M (keep "
                f"{self.target / 1e6:.2f}M): {self.shape.knob}, {self.shape.params / 1e6:.2f}M kept "
                f"({self.distance / self.dense:+.2%} of the model from the budget; --ratio {self.shape.ratio:.4f})")


def fit_budget(shapes: Iterable[Shape], dense: int, share: float) -> ParameterBudget:
    """The shape whose kept count is nearest the budget's (see the module docstring)."""
    options = list(shapes)
    if not options:
        raise DressError("the method offers no output size for this model; try another --method")
    target = math.floor(dense * (1.0 - share))
    return ParameterBudget(share, dense, min(options, key=lambda s: (abs(s.params - target), s.params)))


def params_per_channel(model: nn.Module, layers_removed: int = 0) -> int:
    """Parameters that one hidden channel touches (its column of every reader and embedding, its row
    of every writer with the bias entry, its norm entries; tied tensors once): what removing one
    channel removes; ``layers_removed``: as if that many decoder layers were gone (layers are alike)."""
    groups = channel_groups(model, [0])
    layers = adapter_for(model).decoder_layers(model)
    inside = {id(p) for p in layers.parameters()}
    in_layers = sum(s.group_size for s in groups if id(s.param) in inside)
    return sum(s.group_size for s in groups) - layers_removed * in_layers // len(layers)


def width_shapes(model: nn.Module, config, extra: Callable[[int], int] = lambda width: 0,
                 layers_removed: int = 0) -> list[Shape]:
    """Every hidden width a width method can keep, as :func:`dress.pruning.hidden.width_choice`
    maps ratios to widths; ``extra(width)``: parameters the method adds back (SliceGPT's shortcuts);
    ``layers_removed``: counted as if that many decoder layers were removed first."""
    adapter = adapter_for(model)
    d = adapter.hidden_size(model)
    counts = layer_parameter_counts(model)
    dense = parameter_count(model) - round(layers_removed * sum(counts) / len(counts))
    per_channel = params_per_channel(model, layers_removed)
    widths = reachable_widths(d, adapter.width_multiple(model.config), config.width_multiple)
    return [Shape(ratio, dense - (d - width) * per_channel + extra(width), f"hidden width {width} of {d}")
            for width, ratio in widths.items()]


def layer_shapes(model: nn.Module, config) -> list[Shape]:
    """Every number of whole layers a depth method can remove (at least one stays); the ratio is the
    exact parameter share, which :func:`dress.pruning.layers.layers_for_ratio` maps back to it."""
    counts = layer_parameter_counts(model)
    dense, per_layer = parameter_count(model), sum(counts) / len(counts)
    return [Shape(k * per_layer / dense, round(dense - k * per_layer), f"{k} of {len(counts)} layers removed")
            for k in range(1, len(counts))]
