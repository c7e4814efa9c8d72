"""The method registry: every pruning method, by name.

A method is a folder under ``dress/methods/`` whose ``__init__.py`` calls :func:`register` (and
:func:`register_config` for its own config block). :func:`methods` imports every such folder once,
so the config's ``method`` choices, the CLI's ``--method`` choices and help, and ``dress compare``'s
names (aliases included) all come from here: adding a method touches its folder and nothing else.

The registered ``apply`` is a ``"module:function"`` string imported on use, so listing the methods
(``dress --help``) does not import torch-heavy code. A method's contract (what ``apply`` receives
and returns) is in :mod:`dress.methods.base`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from dress.errors import DressError


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    ``apply``: ``"dress.methods.x.module:function"``; ``summary``: one line for ``--help``;
    ``needs_data(config)``: whether the method itself reads calibration windows (recovery's need
    is the pipeline's business); ``aliases``: extra ``dress compare`` names, each a set of dotted
    config overrides (``{"dress-l1": {"regularize.norm": "l1"}}``); ``unsupported``: optional
    ``"module:function"`` taking the loaded model and returning why the method cannot prune it
    (``None``: it can), checked before any work on the model starts; ``shapes``: ``"module:function"``
    taking ``(model, config)`` and listing every output the method can make as
    :class:`dress.pruning.budget.Shape` (the ratio and the parameters kept), so ``--ratio-of params``
    can give it a parameter budget; ``memory``: ``"module:ATTRIBUTE"`` naming its
    :class:`dress.memory_plan.MethodMemory` (the stages, settings and output shape the memory plan
    uses; every method must declare it); ``rebuild``: ``"module:function"`` taking ``(model, args)`` that
    gives a model built from the saved config the method's non-stock structure before its weights load
    (``dress.json`` names it by the method's registry key, ``{"rebuild": {"method": name, "args": ...}}``,
    as PEFT saves ``peft_type``, never a Python path); ``exact_cut``: the method trains what it removes to
    exactly nothing before the cut, so the cut itself changes no output (``prune_gap_nats`` is 0 to
    rounding; the contract suite checks the claim)."""

    name: str
    apply: str
    summary: str
    needs_data: Callable[[Any], bool] = lambda config: True
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsupported: str | None = None
    shapes: str | None = None
    memory: str | None = None
    rebuild: str | None = None
    exact_cut: bool = False

    def function(self) -> Callable:
        return _resolve(self.apply)

    def unsupported_reason(self, model: Any) -> str | None:
        """Why this method cannot prune ``model`` (``None``: it can)."""
        return _resolve(self.unsupported)(model) if self.unsupported else None

    def output_shapes(self, model: Any, config: Any) -> list:
        """Every output size this method can make of ``model`` (see ``shapes``)."""
        if self.shapes is None:
            raise DressError(f"--ratio-of params: method {self.name} cannot take a parameter budget "
                             "(it lists no output sizes); use --ratio-of method")
        return _resolve(self.shapes)(model, config)

    def memory_terms(self) -> Any:
        """The method's :class:`dress.memory_plan.MethodMemory` (its stages, settings and output shape
        for the memory plan); ``memory``: ``"module:ATTRIBUTE"`` in the method's folder."""
        if self.memory is None:
            raise ValueError(f"method {self.name} declares no memory terms (MethodSpec.memory); the plan needs them")
        return _resolve(self.memory)

    def rebuild_structure(self, model: Any, args: dict) -> None:
        """Replay the structure this method's output records (see ``rebuild``)."""
        if self.rebuild is None:
            raise ValueError(f"method {self.name} records no structure to rebuild")
        _resolve(self.rebuild)(model, args)

    def refusal(self, model: Any) -> str | None:
        """``"<method> does not support <model type>: <why>"``, or ``None`` when it can prune ``model``."""
        reason = self.unsupported_reason(model)
        return None if reason is None else f"{self.name} does not support {model.config.model_type}: {reason}"


def _resolve(target: str) -> Callable:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


_METHODS: dict[str, MethodSpec] = {}
_CONFIGS: dict[str, type[BaseModel]] = {}
_discovered = False


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method (called from its folder's ``__init__.py``)."""
    if spec.name in _METHODS and _METHODS[spec.name] != spec:
        raise ValueError(f"method {spec.name!r} is registered twice")
    _METHODS[spec.name] = spec
    return spec


def register_config(section: str, model: type[BaseModel]) -> None:
    """Add a config block ``section`` (e.g. ``"trsp"``) to :class:`dress.config.PruneConfig`."""
    if _CONFIGS.get(section, model) is not model:
        raise ValueError(f"config block {section!r} is registered twice")
    _CONFIGS[section] = model


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True
        folders = sorted((info.name for info in pkgutil.iter_modules(__path__) if info.ispkg),
                         key=lambda name: (name != "dress", name))  # the default method first
        for name in folders:
            importlib.import_module(f"{__name__}.{name}")


def _folder_order(module: str) -> tuple[bool, str]:
    """Sort key of the folder ``dress.methods.<folder>...`` that defines something: DReSS first,
    then by folder name, so the order never depends on which folder happened to be imported first."""
    folder = module.split(".")[2] if module.count(".") >= 2 else module
    return folder != "dress", folder


def methods() -> dict[str, MethodSpec]:
    """Every registered method, by name: DReSS's folder first, then folders by name, and within a
    folder in registration order."""
    _discover()
    order = sorted(enumerate(_METHODS.values()), key=lambda item: (_folder_order(item[1].apply), item[0]))
    return {spec.name: spec for _, spec in order}


def config_blocks() -> dict[str, type[BaseModel]]:
    """Every method-owned config block, by section name, in the same folder order."""
    _discover()
    order = sorted(enumerate(_CONFIGS.items()), key=lambda item: (_folder_order(item[1][1].__module__), item[0]))
    return dict(pair for _, pair in order)


def get(name: str) -> MethodSpec:
    known = methods()
    if name not in known:
        raise DressError(f"unknown method {name!r}; choose one of {', '.join(known)}")
    return known[name]


def aliases() -> dict[str, tuple[str, dict[str, Any]]]:
    """``dress compare`` names beyond the method names: alias -> (method, overrides)."""
    return {alias: (spec.name, overrides) for spec in methods().values() for alias, overrides in spec.aliases.items()}


def help_text() -> str:
    """One line per method, for ``--method``'s help."""
    return "; ".join(f"{spec.name}: {spec.summary}" for spec in methods().values())
