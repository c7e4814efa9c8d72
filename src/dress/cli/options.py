"""Command-line options generated from the typed config (:mod:`dress.config`): one flag per
field, its help from the field's description with the default appended, its type and choices from
the annotation. ``dress prune`` and ``dress compare`` use the same generator.

Every generated option defaults to ``None`` ("not given"), so only what the user typed overrides a
``--config`` file; :func:`overrides` returns exactly those values as a nested dict.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

from dress.config import ConfigField, config_fields

NONE_WORDS = ("all", "none")  # spellings of None for optional numbers (--eval-tokens all)


def add_config_options(parser: argparse.ArgumentParser, skip: Iterable[str] = (), title: str | None = None) -> list[ConfigField]:
    """Add a flag for every config field not in ``skip`` (dotted names), grouped by block.
    Returns the fields added (pass them to :func:`overrides`)."""
    skip = set(skip)
    groups: dict[str, argparse._ArgumentGroup] = {}
    added = []
    for field in config_fields():
        if field.flag is None or field.dotted in skip:
            continue
        block = title if title is not None else field.block
        group = groups.get(block) if block else parser
        if group is None:
            group = groups[block] = parser.add_argument_group(block)
        group.add_argument(field.flag, *field.aliases, dest=field.dotted, default=None, help=_help(field),
                           **_kind(field))
        added.append(field)
    return added


def overrides(args: argparse.Namespace, fields: Iterable[ConfigField]) -> dict:
    """The options the user gave, as a nested dict of config values."""
    tree: dict = {}
    for field in fields:
        value = getattr(args, field.dotted, None)
        if value is None:
            continue
        *parents, leaf = field.dotted.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = None if value == _NONE else value
    return tree


_NONE = object()  # an optional number given as "all"/"none"


def _base(annotation) -> tuple[Any, bool]:
    """``(type without None, whether None is allowed)``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _kind(field: ConfigField) -> dict:
    base, optional = _base(field.info.annotation)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(base) is Literal:
        return {"choices": list(typing.get_args(base))}
    if typing.get_origin(base) is list:
        return {"type": lambda text: [part.strip() for part in text.split(",") if part.strip()], "metavar": "A,B,..."}
    if base in (int, float) and optional:
        return {"type": _optional_number(base), "metavar": base.__name__.upper()}
    if base in (int, float, str):
        return {"type": base, "metavar": base.__name__.upper()}
    raise TypeError(f"no command-line form for {field.dotted}: {field.info.annotation}")


def _optional_number(kind):
    def parse(text: str):
        if text.lower() in NONE_WORDS:
            return _NONE
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None

    return parse


def _help(field: ConfigField) -> str:
    default = field.default
    if isinstance(default, list):
        shown = ",".join(map(str, default))
    elif default is None:
        shown = "none"
    elif isinstance(default, bool):
        shown = "on" if default else "off"
    else:
        shown = str(default)
    text = (field.info.description or "").replace("%", "%%")
    return f"{text} (default: {shown})" if text else f"(default: {shown})"
