"""The base of every config block, and how a field names its command-line flag.

A block's flags are ``--`` + its ``flag_prefix`` + the field name with ``-`` for ``_``; a field can
name its own with ``json_schema_extra=flag("--other")`` (``flag(None)``: not on the command line).
``title`` heads the block's group in ``--help``. See :mod:`dress.config`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class StrictConfig(BaseModel):
    """Unknown keys are errors; assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    title: ClassVar[str] = ""
    flag_prefix: ClassVar[str] = ""


def flag(name: str | None, **extra) -> dict:
    """``json_schema_extra`` that names a field's flag explicitly (``None``: no flag)."""
    return {"flag": name, **extra}
