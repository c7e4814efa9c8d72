"""Resolve a model spec (bundled short name, local folder, or hub id) and load it.

Contract of :func:`load_model`: returns a model in eval mode plus its tokenizer, or raises
:class:`DressError` saying what to do. It never downloads anything when the hub is unreachable:
a hub id is checked first, with a short timeout, so an offline machine fails in seconds.

:func:`load` (exported as ``dress.load``) reads any checkpoint dress wrote, including OPT/Phi
results that stock transformers cannot build (see :mod:`dress.io.saving`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dress.errors import DressError

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
    from dress.io.bundled import BUNDLED_MODELS, bundled_model_dir

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
    """Fail fast, with advice, when a hub id cannot be fetched."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return  # already downloaded once; transformers will use the cache
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise DressError(
            f"{repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
            "Unset HF_HUB_OFFLINE, download it on a connected machine, or pass a local folder "
            "or a bundled model (smollm2-135m, gemma3-270m)."
        )
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    url = f"{endpoint}/api/models/{repo_id}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise DressError(
                f"the hub refused access to {repo_id!r} (HTTP {err.code}); it may be gated: accept its "
                "licence on huggingface.co and run `huggingface-cli login`"
            ) from None
        if err.code == 404:
            raise DressError(f"no model {repo_id!r} on the Hugging Face hub; check the spelling") from None
        return  # other statuses: let transformers report it
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise DressError(
            f"cannot reach the Hugging Face hub to fetch {repo_id!r} ({reason}). Work offline with a "
            "local model folder or a bundled model (smollm2-135m, gemma3-270m)."
        ) from None


def load_model(spec: str | None = None, *, dtype: torch.dtype = torch.float32, device: str | None = None) -> LoadedModel:
    """Load model and tokenizer for ``spec`` (see :func:`resolve_model_path`)."""
    from transformers import AutoTokenizer

    from dress.io.saving import load_checkpoint

    source, path = resolve_model_path(spec)
    where = str(path) if path is not None else source
    model = load_checkpoint(where, dtype=dtype)
    if device:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(where)
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, path=path)


def load(spec: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load any model folder dress wrote (or any HF causal LM) with one call."""
    return load_model(str(spec), dtype=dtype).model
