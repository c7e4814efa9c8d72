"""Writing and reading pruned checkpoints.

Writing (:func:`save_model`): the output goes to a temporary sibling folder and is renamed into
place only when complete, so an interrupted run never leaves a half-written model; an existing
output is replaced only with ``overwrite=True``.

Reading (:func:`load_checkpoint`): stock folders load with ``AutoModelForCausalLM``. OPT/Phi
models whose hidden width dress reduced cannot be stock checkpoints (transformers derives their
attention width from ``hidden_size``); their ``dress.json`` says ``"loader": "dress"`` and lists
the removed channels, and loading rebuilds the original architecture, replays the channel removal
on it, and then loads the saved weights strictly. A record may also name a structure function
under ``"rebuild"`` (SliceGPT's norms and shortcuts), applied before the weights are loaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from dress.errors import DressError
from dress.io.record import give_default_permissions, read_record, write_record


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; call *before* any long work."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DressError(f"output {out} already exists; pass --overwrite to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise DressError(f"output {out} exists and is not a folder")
    return out


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out``, on error it is deleted."""
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    give_default_permissions(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def save_model(model: nn.Module, tokenizer, out: str | Path, record: dict, overwrite: bool = False) -> Path:
    """Save weights (safetensors), config, tokenizer and ``dress.json`` atomically to ``out``."""
    with atomic_output_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_record(tmp, record)
    return Path(out)


def load_checkpoint(where: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a causal LM from a folder or hub id, replaying dress's channel removal if needed."""
    from transformers import AutoModelForCausalLM

    record = read_record(where) if Path(where).is_dir() else None
    if record is None or record.get("loader", "transformers") == "transformers":
        try:
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
        except (ValueError, KeyError) as err:
            raise DressError(f"transformers cannot load {where} as a causal LM: {err}") from None
        return model.eval()
    return _load_with_replay(Path(where), record, dtype)


def _replay_structure(model: nn.Module, rebuild: dict | None) -> None:
    """Structure hook: a method whose result is more than a narrower stock model (e.g. SliceGPT's
    gain-free norms with residual shortcuts) records ``{"function": "dress.<module>:<name>",
    "args": {...}}`` under ``"rebuild"``; the function reshapes a model built from the saved config
    in place, before the weights are loaded strictly."""
    if not rebuild:
        return
    import importlib

    module_name, _, func = str(rebuild.get("function", "")).partition(":")
    if not module_name.startswith("dress.") or not func:
        raise DressError(f"dress.json names an invalid rebuild function {rebuild.get('function')!r}")
    getattr(importlib.import_module(module_name), func)(model, rebuild.get("args", {}))


def _load_with_replay(path: Path, record: dict, dtype: torch.dtype) -> nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from dress.pruning.hidden import remove_hidden_channels

    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    removed = record.get("hidden_channels_removed") or []
    if removed:
        remove_hidden_channels(model, removed)
    _replay_structure(model, record.get("rebuild"))
    state = {}
    for shard in sorted(path.glob("*.safetensors")):
        state.update(load_file(shard))
    if not state:
        raise DressError(f"{path} has no .safetensors weights")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise DressError(
            f"weights in {path} do not match the recorded pruning (missing {sorted(set(missing) - tied)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); the folder may be damaged"
        )
    return model.to(dtype).eval()
