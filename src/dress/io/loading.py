"""Resolve a model spec (bundled short name, local folder, or hub id) and load it.

Contract of :func:`load_model`: returns a model in eval mode plus its tokenizer, or raises
:class:`DressError` saying what to do. It never downloads anything when the hub is unreachable:
a hub id is checked first, with a short timeout, so an offline machine fails in seconds.

:func:`load` (exported as ``dress.load``) reads any checkpoint dress wrote, including OPT/Phi
results that stock transformers cannot build (see :mod:`dress.io.saving`).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dress.adapters import SUPPORTED_MODEL_TYPES
from dress.errors import DressError
from dress.io.bundled import BUNDLED_MODELS, bundled_model_dir
from dress.io.saving import load_checkpoint

DEFAULT_MODEL = "smollm2-135m"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    source: str  # what the user asked for, as recorded in dress.json
    path: Path | None  # local folder the weights came from, if any


def resolve_model_path(spec: str | None) -> tuple[str, Path | None]:
    """Map a user's spec to ``(source_name, local_folder_or_None)``.

    ``None`` means the bundled default. A hub id returns ``(id, None)`` after checking the hub
    can be reached (or the id is already in the local HF cache).
    """
    spec = spec or DEFAULT_MODEL
    if spec in BUNDLED_MODELS:
        return spec, bundled_model_dir(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DressError(f"{path} is a folder but has no config.json; point at a Hugging Face model folder")
        return spec, path
    if path.exists():
        raise DressError(f"{path} is a file; pass the model's folder (the one holding config.json)")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise DressError(
            f"model path {spec!r} does not exist. Pass an existing model folder (with config.json), a hub "
            f"id such as meta-llama/Llama-2-7b-hf, or a bundled model: {', '.join(BUNDLED_MODELS)}"
        )
    if spec.count("/") != 1:
        raise DressError(
            f"model {spec!r} is neither an existing folder, a hub id (owner/name) nor a bundled model. "
            f"Pass an existing model folder, a hub id such as meta-llama/Llama-2-7b-hf, or one of: "
            f"{', '.join(BUNDLED_MODELS)}"
        )
    _check_hub_reachable(spec)
    return spec, None


def _check_hub_reachable(repo_id: str, timeout: float = 8.0) -> None:
    """Fail fast, with advice, when a hub id cannot be fetched: fetch its ``config.json`` through
    the hub client itself (``hf_hub_download``), which sends the user's token (``hf auth login`` or
    ``HF_TOKEN``), so a private repository the user may read works and a gated one is named as such."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return  # already downloaded once; transformers will use the cache
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise DressError(
            f"{repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
            "Unset HF_HUB_OFFLINE, download it on a connected machine, or pass a local folder "
            "or a bundled model (smollm2-135m, gemma3-270m)."
        )
    login = "log in with `hf auth login` (or set HF_TOKEN)"
    try:
        hf_hub_download(repo_id, "config.json", etag_timeout=timeout, endpoint=os.environ.get("HF_ENDPOINT") or None)
    except GatedRepoError:
        raise DressError(
            f"{repo_id!r} is gated: accept its licence on its page at huggingface.co with your account, then "
            f"{login}"
        ) from None
    except RepositoryNotFoundError:
        raise DressError(
            f"no model {repo_id!r} that you can read on the Hugging Face hub: check the spelling; if it is private, "
            f"{login} with an account that may read it"
        ) from None
    except RevisionNotFoundError as err:
        raise DressError(f"{repo_id!r}: {err}") from None
    except LocalEntryNotFoundError:
        raise DressError(
            f"cannot reach the Hugging Face hub to fetch {repo_id!r} and it is not in the local cache. Work "
            "offline with a local model folder or a bundled model (smollm2-135m, gemma3-270m)."
        ) from None
    except HfHubHTTPError as err:
        raise DressError(f"the Hugging Face hub refused {repo_id!r}: {err}") from None
    except OSError as err:
        raise DressError(
            f"cannot reach the Hugging Face hub to fetch {repo_id!r} ({err}). Work offline with a local model "
            "folder or a bundled model (smollm2-135m, gemma3-270m)."
        ) from None


def read_model_config(path: Path) -> dict:
    """``config.json`` of a local model folder as a dict, or DressError saying what is wrong."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DressError(f"{file} is not a text file; restore the model folder (re-download or re-copy it)") from None
    except json.JSONDecodeError as err:
        raise DressError(
            f"{file} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); restore the model folder "
            "(re-download or re-copy it)"
        ) from None
    except OSError as err:
        raise DressError(f"cannot read {file} ({err.strerror or err})") from None
    if not isinstance(config, dict):
        raise DressError(f"{file} does not hold a JSON object; restore the model folder")
    return config


def model_config(spec: str | None):
    """The transformers config of a bundled name, local folder or hub id (``AutoConfig``), read once
    per process for each version of its ``config.json`` (the memory plan and the saved dtype both ask
    for it); DressError when it cannot be read. Callers must not modify it."""
    source, path = resolve_model_path(spec)
    stamp = (path / "config.json").stat().st_mtime_ns if path is not None and (path / "config.json").is_file() else None
    return _auto_config(str(path) if path is not None else source, stamp)


@functools.lru_cache(maxsize=16)
def _auto_config(where: str, stamp: int | None):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as err:
        raise DressError(f"cannot read the config of {where!r}: {err}") from None


def check_supported_architecture(spec: str | None) -> None:
    """For a local (or bundled) model folder: refuse an architecture dress cannot prune from its
    ``config.json``, before any weight is read. Hub ids are checked once their config is fetched."""
    _, path = resolve_model_path(spec)
    if path is None:
        return
    config = read_model_config(path)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        arch = ", ".join(config.get("architectures") or []) or "unknown architecture"
        raise DressError(
            f"model type {model_type!r} ({arch}) in {path / 'config.json'} is not supported; dress supports: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )


def load_model(
    spec: str | None = None, *, dtype: torch.dtype = torch.float32, device: str | None = None, need_tokenizer: bool = True
) -> LoadedModel:
    """Load model and tokenizer for ``spec`` (see :func:`resolve_model_path`). With
    ``need_tokenizer=False`` (no text will be read) a missing or unreadable tokenizer is None."""
    source, path = resolve_model_path(spec)
    if path is not None:
        read_model_config(path)  # a broken config.json is named as such, not as a transformers traceback
    where = str(path) if path is not None else source
    model = load_checkpoint(where, dtype=dtype)
    if device:
        model.to(device)
    tokenizer = load_tokenizer(where, required=need_tokenizer)
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, path=path)


def load_tokenizer(where: str, required: bool = True):
    """``AutoTokenizer.from_pretrained(where)``; a failure is a DressError with advice, or None when
    the tokenizer is not ``required``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where)
    except Exception as err:  # noqa: BLE001 - transformers raises many types for a missing/odd tokenizer
        if not required:
            return None
        hint = ""
        if "sentencepiece" in str(err).lower():
            hint = " The tokenizer needs the sentencepiece package: pip install sentencepiece."
        raise DressError(
            f"cannot read the tokenizer of {where} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})."
            f"{hint} Add the model's tokenizer files (tokenizer.json or tokenizer.model with tokenizer_config.json), "
            "or run without text: --method direct --selection last --no-rft --no-eval"
        ) from None


def load(spec: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load any model folder dress wrote (or any HF causal LM) with one call."""
    return load_model(str(spec), dtype=dtype).model
