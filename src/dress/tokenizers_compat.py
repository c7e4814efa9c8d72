"""Saved tokenizers that transformers 4.x can read, as well as 5.

transformers 5 writes ``"tokenizer_class": "TokenizersBackend"`` into ``tokenizer_config.json``
for every tokenizer backed by a ``tokenizer.json``. transformers 4 does not know that class and
refuses the folder ("Tokenizer class TokenizersBackend does not exist"), and so does every tool
pinned to it (llama.cpp's converter with its own requirements, older serving stacks).
``PreTrainedTokenizerFast`` is the class both versions read from a ``tokenizer.json``: 5 maps it to
the same backend (identical ids, special tokens and chat template; tested), 4 loads it natively.

Contract of :func:`make_portable`: rewrites the ``tokenizer_config.json`` of a saved folder in
place when it names ``TokenizersBackend`` and a ``tokenizer.json`` is present, and drops the
load-time keys transformers 5 records (``backend``, ``is_local``, ``local_files_only``), which are
facts about the loading machine, not the tokenizer. Anything else is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path

PORTABLE_CLASS = "PreTrainedTokenizerFast"
_V5_ONLY_CLASSES = ("TokenizersBackend",)
_LOAD_TIME_KEYS = ("backend", "is_local", "local_files_only")


def make_portable(folder: str | Path) -> bool:
    """Make ``folder``'s saved tokenizer readable by transformers 4 and 5. Returns whether it changed."""
    folder = Path(folder)
    path = folder / "tokenizer_config.json"
    if not path.is_file() or not (folder / "tokenizer.json").is_file():
        return False
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") not in _V5_ONLY_CLASSES:
        return False
    config["tokenizer_class"] = PORTABLE_CLASS
    for key in _LOAD_TIME_KEYS:
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return True
