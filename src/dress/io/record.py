"""``dress.json``: the record written beside every model dress produces.

Contract: the record is a JSON object. :func:`write_record` writes it whole;
:func:`append_to_record` adds one entry under a list-valued key (e.g. ``"evaluations"``),
rewriting the file atomically so a crash never leaves half a record.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
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
    text = json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def replace_atomically(path: str | Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` a temporary file beside ``path`` (same suffix, so writers that pick the format
    from it work), then rename it onto ``path``: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        give_default_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def give_default_permissions(path: Path) -> None:
    """``tempfile`` creates files 0600 and folders 0700; give ``path`` the mode a plain ``open`` or
    ``mkdir`` would have (0666 / 0777 minus the umask), so outputs are as shareable as any other file."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


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


def slug(text: str) -> str:
    """``text`` as a safe file or folder name (letters, digits and ``-_.@=`` kept)."""
    return "".join(c if c.isalnum() or c in "-_.@=" else "_" for c in text)
