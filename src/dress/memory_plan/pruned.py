"""The model a cut leaves, as a :class:`~dress.memory_plan.shapes.ModelShape`: narrower (hidden
channels removed), shorter (decoder layers removed), by the same rules the cuts use; pure functions."""

from __future__ import annotations

from dataclasses import replace

from dress.memory_plan.method import method_memory
from dress.memory_plan.settings import RunSettings
from dress.memory_plan.shapes import ModelShape
from dress.pruning.widths import choose_width


def pruned_shape(shape: ModelShape, run: RunSettings) -> ModelShape:
    """The model after removal, as the method's own rule makes it (:class:`MethodMemory`)."""
    return method_memory(run.method).pruned(shape, run)


def narrower(shape: ModelShape, width: int, extra: int = 0) -> ModelShape:
    """``shape`` with hidden width ``width`` (``extra`` parameters added back: SliceGPT's shortcuts)."""
    removed = shape.hidden - width
    embed = shape.embed_params - removed * shape.vocab  # the token embedding table loses a column per channel
    one_layer = shape.one_layer - removed * shape.layer_params_per_channel if shape.one_layer else 0
    return replace(shape, hidden=width, params=int(shape.params - removed * shape.params_per_channel + extra),
                   embed_params=int(embed), one_layer=one_layer)


def shorter(shape: ModelShape, layers_removed: int) -> ModelShape:
    """``shape`` without ``layers_removed`` decoder layers (layers are alike)."""
    return replace(shape, layers=shape.layers - layers_removed,
                   params=int(shape.params - layers_removed * shape.layer_params))


def width_for(shape: ModelShape, run: RunSettings) -> int:
    """The hidden width a width method keeps at ``run.ratio``: the cut's own rule
    (:func:`dress.pruning.widths.choose_width`)."""
    if run.ratio <= 0.0:  # nothing removed (a plan of the dense shape)
        return shape.hidden
    return choose_width(shape.hidden, run.ratio, shape.heads, run.width_multiple).width


def layers_for(shape: ModelShape, ratio: float) -> int:
    """Layers a depth method removes at ``ratio`` of the parameters: the nearest count, ties to fewer
    (:func:`dress.pruning.layers.layers_for_ratio`'s rule), at least one removed and one kept."""
    return min(range(1, max(shape.layers, 2)), key=lambda k: (abs(k * shape.layer_params / shape.params - ratio), k))
