"""Plain-text tables for the terminal.

:func:`format_table` turns a list of dicts into an aligned table: text left-aligned, numbers
right-aligned, missing values shown as ``-``. It has no knowledge of what the rows mean, so any
command can use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MISSING = "-"


@dataclass(frozen=True)
class Column:
    """One column: the row key it shows, its header, and an optional format spec for numbers.

    ``fmt`` is a :func:`format` spec such as ``".2f"`` or ``",d"``; without it floats use ``.4g``
    and ints are shown as they are.
    """

    key: str
    header: str | None = None
    fmt: str | None = None

    @property
    def title(self) -> str:
        return self.header if self.header is not None else self.key


ColumnSpec = str | tuple[str, str] | tuple[str, str, str] | Column


def _as_column(spec: ColumnSpec) -> Column:
    if isinstance(spec, Column):
        return spec
    if isinstance(spec, str):
        return Column(spec)
    return Column(*spec)


def format_value(value: Any, fmt: str | None = None) -> str:
    """The text of one cell. ``None`` and NaN become ``-``; bools are ``yes``/``no``."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isnan(value):
        return MISSING
    if isinstance(value, (int, float)):
        if fmt is not None:
            return format(value, fmt)
        return format(value, ".4g") if isinstance(value, float) else str(value)
    return str(value)


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[ColumnSpec], *, gap: int = 2) -> str:
    """Render ``rows`` as an aligned plain-text table with a header and a rule under it.

    ``columns`` lists what to show, in order: a key, ``(key, header)``, ``(key, header, fmt)`` or a
    :class:`Column`. A column is right-aligned when every present value in it is a number.
    Returns the table without a trailing newline.
    """
    cols = [_as_column(c) for c in columns]
    cells = [[format_value(row.get(c.key), c.fmt) for c in cols] for row in rows]
    right = [
        any(_is_numeric(row.get(c.key)) for row in rows)
        and all(_is_numeric(row.get(c.key)) or row.get(c.key) is None for row in rows)
        for c in cols
    ]
    widths = [max([len(c.title)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    sep = " " * gap

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return sep.join(parts).rstrip()

    out = [line([c.title for c in cols]), sep.join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def format_pairs(pairs: Sequence[tuple[str, Any]]) -> str:
    """``key: value`` lines with the keys padded to one width (for settings blocks)."""
    if not pairs:
        return ""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {format_value(v)}" for k, v in pairs)
