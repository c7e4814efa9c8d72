"""Local text files: ``*.txt`` (documents separated by blank lines) or ``*.jsonl`` (field ``"text"``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dress.data.documents import EVAL_EVERY, TextSource, split_documents
from dress.errors import DressError


def _read_utf8(path: Path) -> str:
    """The file's text; a binary or non-UTF-8 file is a DressError with advice."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DressError(f"cannot read text file {path} ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DressError(
            f"{path} is not UTF-8 text (byte {err.start} cannot be decoded; is it a binary file?). Pass a plain "
            "UTF-8 .txt file (documents separated by blank lines) or a .jsonl file with a \"text\" field"
        ) from None
    if "\x00" in text:
        raise DressError(f"{path} contains NUL bytes: it looks like a binary file, not text. Pass a UTF-8 .txt or .jsonl file")
    return text


def _read_txt(path: Path) -> list[str]:
    text = _read_utf8(path)
    return [doc.strip() for doc in re.split(r"\n[ \t\r\f\v]*\n", text) if doc.strip()]


def _read_jsonl(path: Path) -> list[str]:
    documents = []
    for number, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line).get("text")
        except (json.JSONDecodeError, AttributeError):
            raise DressError(f"{path}:{number} is not a JSON object") from None
        if not isinstance(text, str):
            raise DressError(f"{path}:{number} has no string field \"text\"")
        documents.append(text)
    return documents


def _load_local(path: Path, holdout: bool) -> TextSource:
    documents = _read_txt(path) if path.suffix == ".txt" else _read_jsonl(path)
    documents = [doc for doc in documents if doc.strip()]
    if not documents:
        raise DressError(f"text file {path} holds no text")
    if not holdout:
        return TextSource(str(path), documents, documents, disjoint=False, description=f"local file {path}")
    calibration, evaluation = split_documents(documents)
    if not evaluation:
        raise DressError(
            f"{path} has {len(documents)} documents; a held-out split (every {EVAL_EVERY}th document) needs "
            f"at least {EVAL_EVERY}"
        )
    return TextSource(str(path), calibration, evaluation, disjoint=True, description=f"local file {path}")
