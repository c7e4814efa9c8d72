"""Which run a training checkpoint belongs to, as the training layer sees it: the run active in this
context (set by :func:`dress.resume.running`; anything with a ``fingerprint`` dict), and the check that a
checkpoint's stored fingerprint is this run's. Lives here, below :mod:`dress.resume`, so the training
loop never imports upward."""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dress.errors import DressError


# The run whose stages are executing in this context: training checkpoints record its fingerprint.
_ACTIVE: contextvars.ContextVar[Any] = contextvars.ContextVar("dress_active_run", default=None)


def active_run() -> Any:
    return _ACTIVE.get()


@contextlib.contextmanager
def running(state: Any) -> Iterator[Any]:
    token = _ACTIVE.set(state)
    try:
        yield state
    finally:
        _ACTIVE.reset(token)



def differences(stored: dict, current: dict, limit: int = 8, there: str = "in the checkpoint") -> list[str]:
    """``["ratio: 0.25 in the checkpoint, 0.5 now", ...]`` (dotted leaves that differ; ``there``
    names where ``stored`` comes from)."""
    a, b = _flatten(stored), _flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, _MISSING) != b.get(key, _MISSING):
            out.append(f"{_show_key(key)}: {_show(a.get(key, _MISSING))} {there}, {_show(b.get(key, _MISSING))} now")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


_MISSING = object()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def _show_key(key: str) -> str:
    return key.removeprefix("settings.")


def _show(value: Any) -> str:
    if value is _MISSING:
        return "absent"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."



def check_same_run(stored: dict, current: dict, where: Path) -> None:
    """Refuse (DressError) when ``stored`` (a checkpoint's fingerprint) is not ``current``'s run.
    Keys present in only one of them that are run *choices* (channels) are not compared: a choice
    is recorded once it is made."""
    base_keys = ("format", "dress_version", "model", "settings", "calibration_file_sha256")
    a = {k: v for k, v in stored.items() if k in base_keys}
    b = {k: v for k, v in current.items() if k in base_keys}
    shared_choices = set(stored) & set(current) - set(base_keys)
    a.update({k: stored[k] for k in shared_choices})
    b.update({k: current[k] for k in shared_choices})
    if a == b:
        return
    lines = differences(a, b)
    raise DressError(
        f"--resume refused: the checkpoints in {where} belong to a run with other settings ("
        + "; ".join(lines)
        + "). Rerun with the checkpoint's settings to continue it, or pass --overwrite (without --resume) to "
        "discard the checkpoints and start over"
    )
