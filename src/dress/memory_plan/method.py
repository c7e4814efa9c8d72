"""What a method tells the plan (:class:`MethodMemory`, declared in its folder) and how the plan asks
for it (:func:`method_memory`, through the method registry). The registry is imported when asked,
never at module level: methods' ``memory.py`` import this package."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dress.methods import get

if TYPE_CHECKING:
    from dress.memory_plan.settings import RunSettings
    from dress.memory_plan.shapes import ModelShape


@dataclass(frozen=True)
class MethodMemory:
    """What a method tells the plan, declared in its folder (``MethodSpec.memory``):

    * ``settings(config)``: the :class:`RunSettings` fields it decides (``train_batch``, ``trains``,
      ``gradient_checkpointing``, ``score_batch``, ``scores``);
    * ``pruned(shape, run)``: the model it outputs, by the rule its cut uses;
    * ``stages(shape, small, run, strategy, n)``: its own stages between the dense evaluation and
      recovery, named as the run records them (``weights`` of the dense model included)."""

    settings: Callable[[Any], dict]
    pruned: Callable[["ModelShape", "RunSettings"], "ModelShape"]
    stages: Callable[..., list]


def method_memory(name: str) -> MethodMemory:
    """The :class:`MethodMemory` of the registered method ``name`` (imports the registry now)."""
    return get(name).memory_terms()
