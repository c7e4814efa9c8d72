"""``dress.json``: the record written beside every model dress produces.

Contract: the record is a JSON object. :func:`write_record` writes it whole;
:func:`append_to_record` adds one entry under a list-valued key (e.g. ``"evaluations"``),
rewriting the file atomically so a crash never leaves half a record.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RECORD_NAME = "dress.json"


def read_record(model_dir: str | Path) -> dict[str, Any] | None:
    """The record of a model folder, or ``None`` if dress did not write it."""
    path = Path(model_dir) / RECORD_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write JSON to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=_jsonable)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(model_dir: str | Path, record: dict[str, Any]) -> None:
    write_json_atomic(Path(model_dir) / RECORD_NAME, record)


def append_to_record(model_dir: str | Path, key: str, entry: dict[str, Any]) -> bool:
    """Append ``entry`` to ``record[key]`` if ``model_dir`` holds a dress record.

    Returns whether anything was written (a model dress did not prune has no record to extend).
    """
    record = read_record(model_dir)
    if record is None:
        return False
    record.setdefault(key, []).append(entry)
    write_record(model_dir, record)
    return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "model_dump"):
        return value.model_dump()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
