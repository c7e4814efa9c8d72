"""Training checkpoints: safetensors for tensors, JSON for the rest -- no pickles anywhere.

One format for one process, data parallel and FSDP2 (the main process writes the full state;
:mod:`dress.training.engine` gathers sharded tensors first). A checkpoint folder holds::

    state.json                    step, history, optimizer hyper-parameters, file names, fingerprint
    model-<step>.safetensors      every model tensor (shared tensors once; "aliases" in state.json)
    extra-<step>.safetensors      optimizer state (flattened "optim/<param>/<key>") and RNG states

``state.json`` is replaced atomically *after* the files it names are complete, then files it no
longer names are deleted: a kill at any moment leaves the previous checkpoint or the new one.

Loading reads only ``state.json`` (``json``) and ``.safetensors`` files (``safetensors.torch.load_file``,
which parses a JSON header and raw little-endian buffers): nothing in a checkpoint folder can run
code. A folder holding an old pickled ``state.pt`` is refused with advice, never unpickled.

``optimizer=None`` writes a *final* checkpoint: the weights (and RNG states) at the end of a
stage, without the optimizer state, which a finished stage never needs again.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dress.errors import DressError
from dress.training.run_identity import check_same_run

STATE_JSON = "state.json"
FORMAT = "dress-train-state/1"
LEGACY_PICKLE = "state.pt"
_OWN_FILE = re.compile(r"^(model|extra)-\d+\.safetensors(\.tmp)?$")


# ---- flattening -------------------------------------------------------------------------------
def unique_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, aliases)``: every tensor once (safetensors refuses shared storage); ``aliases``
    maps a dropped key to the kept key holding the same tensor (tied embeddings)."""
    seen: dict[tuple, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for key, value in state.items():
        value = value.detach()
        ident = (value.device.type, value.untyped_storage().data_ptr(), value.storage_offset(),
                 tuple(value.shape), tuple(value.stride()), value.dtype) if value.numel() else None
        if ident is not None and ident in seen:
            aliases[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        tensors[key] = value.to("cpu").contiguous()
    return tensors, aliases


def flatten_optimizer(optimizer_state: dict, names: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` (params as indices) -> tensors ``optim/<name>/<key>`` and a JSON
    description (hyper-parameters per group with parameter *names*, non-tensor state values)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in optimizer_state["state"].items():
        name = names[int(index)]
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    groups = []
    for group in optimizer_state["param_groups"]:
        groups.append({**{k: v for k, v in group.items() if k != "params"},
                       "params": [names[int(i)] for i in group["params"]]})
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], description: dict, names: list[str]) -> dict:
    """The inverse of :func:`flatten_optimizer` for an optimizer whose parameters are ``names`` in order."""
    index = {name: i for i, name in enumerate(names)}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("optim/"):
            continue
        name, _, field = key[len("optim/"):].rpartition("/")
        if name not in index:
            raise DressError(f"the checkpoint's optimizer state names a parameter {name!r} this model does not train")
        state.setdefault(index[name], {})[field] = value
    for name, values in description.get("scalars", {}).items():
        state.setdefault(index[name], {}).update(values)
    groups = []
    for group in description["param_groups"]:
        missing = [n for n in group["params"] if n not in index]
        if missing:
            raise DressError(f"the checkpoint's optimizer trains {missing[:3]}, which this model does not train")
        groups.append({**group, "params": [index[n] for n in group["params"]]})
    return {"state": state, "param_groups": groups}


def optimizer_param_names(model: nn.Module, optimizer) -> list[str]:
    """A stable name for every parameter of ``optimizer``, in its ``state_dict`` order: the model's
    parameter name, or ``#<position>`` for a parameter the model does not own."""
    by_id = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), name)
    names = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            names.append(by_id.get(id(p), f"#{len(names)}"))
    return names


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng/cuda/{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(tensors, key=_cuda_index) if k.startswith("rng/cuda/")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _cuda_index(key: str) -> int:
    return int(key.rsplit("/", 1)[-1]) if key.startswith("rng/cuda/") else -1


# ---- writing ----------------------------------------------------------------------------------
def write_checkpoint(
    directory: Path,
    *,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_tensors: dict[str, torch.Tensor] | None,
    optimizer_description: dict | None,
    history: dict,
    fingerprint: dict | None = None,
    stage: str = "",
) -> None:
    """Write one checkpoint (see module docstring); ``optimizer_tensors=None``: a final one."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, aliases = unique_tensors(model_state)
    extra = {**(optimizer_tensors or {}), **rng_tensors()}
    files = {"model": f"model-{step:08d}.safetensors", "extra": f"extra-{step:08d}.safetensors"}
    try:
        for kind, payload in (("model", tensors), ("extra", extra)):
            tmp = directory / (files[kind] + ".tmp")
            save_file(payload, str(tmp), metadata={"format": FORMAT})
            _fsync(tmp)
            os.replace(tmp, directory / files[kind])
        state = {
            "format": FORMAT,
            "stage": stage,
            "step": step,
            "final": optimizer_tensors is None,
            "files": files,
            "aliases": aliases,
            "optimizer": optimizer_description if optimizer_tensors is not None else None,
            "history": history,
            "fingerprint": fingerprint,
        }
        tmp = directory / (STATE_JSON + ".tmp")
        tmp.write_text(json.dumps(state, default=_plain))
        _fsync(tmp)
        os.replace(tmp, directory / STATE_JSON)
    except OSError as err:
        _remove_unreferenced(directory)
        raise DressError(
            f"could not write the training checkpoint in {directory} ({err.strerror or err}); "
            "free disk space (or point --out elsewhere) and rerun with --resume: the previous checkpoint is intact"
        ) from None
    _remove_unreferenced(directory)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a checkpoint's JSON")


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _remove_unreferenced(directory: Path) -> None:
    """Delete checkpoint files that ``state.json`` does not name (older steps, temporary files)."""
    keep: set[str] = set()
    path = directory / STATE_JSON
    if path.is_file():
        try:
            keep = set(json.loads(path.read_text()).get("files", {}).values())
        except (OSError, json.JSONDecodeError):
            return
    for f in directory.iterdir():
        if _OWN_FILE.match(f.name) and f.name not in keep:
            f.unlink(missing_ok=True)
    (directory / (STATE_JSON + ".tmp")).unlink(missing_ok=True)


# ---- reading ----------------------------------------------------------------------------------
def read_checkpoint(directory: Path, fingerprint: dict | None = None, stage: str = "") -> dict | None:
    """``{"state": state.json, "model": tensors, "extra": tensors}`` of the checkpoint in
    ``directory``, or None if there is none. Refuses a pickled checkpoint and one whose fingerprint
    differs from ``fingerprint`` (when both are known)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    path = directory / STATE_JSON
    if not path.is_file():
        if (directory / LEGACY_PICKLE).exists():
            raise DressError(
                f"{directory} holds a pickled checkpoint ({LEGACY_PICKLE}) from an older dress; dress no longer "
                f"loads pickles (loading one can run arbitrary code). Delete {directory.parent} and rerun without --resume"
            )
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DressError(f"{path} is damaged ({err}); delete {directory} to restart this stage") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DressError(f"{path} is not a dress training checkpoint of format {FORMAT}; delete {directory}")
    if stage and state.get("stage") and state["stage"] != stage:
        raise DressError(f"{directory} holds a checkpoint of stage {state['stage']!r}, not {stage!r}; delete it")
    if fingerprint is not None and state.get("fingerprint") is not None:
        check_same_run(state["fingerprint"], fingerprint, directory)
    loaded = {"state": state}
    for kind in ("model", "extra"):
        name = state.get("files", {}).get(kind)
        try:
            loaded[kind] = load_file(str(directory / name)) if name else {}
        except (OSError, SafetensorError) as err:
            raise DressError(f"{directory / str(name)} is damaged ({err}); delete {directory} to restart this stage") from None
    return loaded


def model_state_with_aliases(loaded: dict) -> dict[str, torch.Tensor]:
    tensors = dict(loaded["model"])
    for key, target in loaded["state"].get("aliases", {}).items():
        tensors[key] = tensors[target]
    return tensors


def load_into(model: nn.Module, optimizer, loaded: dict) -> None:
    """Load a local/data-parallel checkpoint into ``model`` (strictly) and ``optimizer`` (if the
    checkpoint has optimizer state; a final checkpoint has none), and restore the RNG states."""
    model.load_state_dict(model_state_with_aliases(loaded), strict=True)
    description = loaded["state"].get("optimizer")
    if description is not None and optimizer is not None:
        names = optimizer_param_names(model, optimizer)
        optimizer.load_state_dict(unflatten_optimizer(loaded["extra"], description, names))
    restore_rng(loaded["extra"])
