"""How many parameters slicing adds beside the narrower model: one formula for the parameter budget
(:func:`.method.budget_shapes`, from the loaded model) and the memory plan (:mod:`.memory`, from a
shape read before loading)."""

from __future__ import annotations


def slicing_adds(width: int, square_maps: int, norm_entries: int) -> int:
    """``square_maps`` maps of ``width x width`` (a shortcut per sub-block, a tied RMS head's map)
    minus the ``norm_entries`` per channel that folding the norms into the weights removes."""
    return square_maps * width * width - norm_entries * width
