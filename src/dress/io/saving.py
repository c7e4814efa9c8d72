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
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from dress.errors import DressError
from dress.io.card import write_model_card
from dress.io.record import give_default_permissions, read_record, write_record
from dress.methods import methods
from dress.pruning.hidden import remove_hidden_channels
from dress.tokenizers_compat import make_portable


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; call *before* any long work."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DressError(f"output {out} already exists; pass --overwrite to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise DressError(f"output {out} exists and is not a folder")
    return out


PARTIAL = ".{name}.partial-{pid}-"  # a temporary output of process pid (mkdtemp adds a random suffix)


def remove_stale_partials(out: str | Path) -> list[Path]:
    """Delete temporary siblings of ``out`` left by a process that was killed while writing (their
    process is gone); returns what was removed. Folders of a live process are left alone."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for tmp in out.parent.glob(f".{out.name}.partial-*"):
        pid = tmp.name[len(f".{out.name}.partial-"):].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out``, on error it is deleted (and an
    ``OSError`` such as a full disk becomes a DressError): ``out`` is the old output or the new
    one, never a mixture."""
    out = check_output_dir(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=PARTIAL.format(name=out.name, pid=os.getpid()), dir=out.parent))
    except OSError as err:
        raise DressError(f"cannot create the output folder beside {out} ({err.strerror or err})") from None
    give_default_permissions(tmp)
    try:
        yield tmp
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"; the previous {out} is untouched" if out.exists() else ""
        raise DressError(
            f"writing {out} failed ({err.strerror or err}){kept}. Free disk space (or choose another --out) and "
            "rerun the same command with --resume: the checkpoints of its training stages are kept"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for written in tmp.rglob("*"):  # writers that stage through tempfile (transformers' weights) leave 0600
        give_default_permissions(written)
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")


def save_model(model: nn.Module, tokenizer, out: str | Path, record: dict, overwrite: bool = False,
               tokenizer_source: str | Path | None = None, dtype: torch.dtype | None = None) -> Path:
    """Save weights (safetensors), config, tokenizer and ``dress.json`` atomically to ``out``.
    Without a loaded ``tokenizer``, the tokenizer files of ``tokenizer_source`` (if any) are copied.
    ``dtype``: the saved weights' dtype (default: the model's); the model in memory is not changed."""
    with atomic_output_dir(out, overwrite) as tmp:
        _save_weights(model, tmp, dtype)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
            make_portable(tmp)  # readable by transformers 4 too (llama.cpp's converter, older stacks)
        elif tokenizer_source is not None:
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_source) / name).is_file():
                    shutil.copyfile(Path(tokenizer_source) / name, tmp / name)
        write_record(tmp, record)
        write_model_card(tmp, record)
    return Path(out)


def _save_weights(model: nn.Module, folder: Path, dtype: torch.dtype | None) -> None:
    """``model.save_pretrained(folder)`` with the floating-point weights (and config's ``dtype``) in
    ``dtype``, from a cast copy of the state dict: the model keeps its own dtype. Tied weights stay
    one tensor (cast once), so transformers still writes them once."""
    if dtype is None or dtype == model.dtype:
        model.save_pretrained(folder)
        return
    cast: dict[tuple, torch.Tensor] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
            if key not in cast:
                cast[key] = tensor.to(dtype)
            tensor = cast[key]
        state[name] = tensor
    model.save_pretrained(folder, state_dict=state)
    config_file = Path(folder) / "config.json"  # transformers writes the model's dtype there
    written = json.loads(config_file.read_text())
    written["dtype"] = str(dtype).removeprefix("torch.")
    config_file.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")


def load_checkpoint(where: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a causal LM from a folder or hub id, replaying dress's channel removal if needed."""
    from transformers import AutoModelForCausalLM

    from safetensors import SafetensorError

    record = read_record(where) if Path(where).is_dir() else None
    if record is None or record.get("loader", "transformers") == "transformers":
        try:
            model, info = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, output_loading_info=True)
        except SafetensorError as err:  # a truncated or overwritten weights file
            raise DressError(f"{_weight_files(where)} is damaged ({err}); restore the model folder "
                             "(re-download or re-copy it)") from None
        except RuntimeError as err:  # transformers' size-mismatch report
            if "mismatched" not in str(err) and "size mismatch" not in str(err):
                raise
            raise DressError(f"the weights in {_weight_files(where)} do not match {Path(where) / 'config.json'} "
                             "(tensor shapes differ); restore the folder so that both come from the same model") from None
        except (ValueError, KeyError) as err:
            raise DressError(f"transformers cannot load {where} as a causal LM: {err}") from None
        except OSError as err:  # e.g. no weight files, or a truncated one
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DressError(f"cannot load the weights of {where} ({first}); restore the model folder") from None
        _check_loading_info(where, info)
        return model.eval()
    return _load_with_replay(Path(where), record, dtype)


def weights_on_disk(folder: str | Path | None) -> int | None:
    """Bytes of a model folder's weight files: its ``*.safetensors``, else its ``*.bin`` (a folder holding
    both is read by transformers from the safetensors); ``None`` for no folder or no weight file."""
    if folder is None or not Path(folder).is_dir():
        return None
    for pattern in ("*.safetensors", "*.bin"):
        files = sorted(Path(folder).glob(pattern))
        if files:
            return sum(f.stat().st_size for f in files)
    return None


def _weight_files(where: str | Path) -> str:
    """The folder's weight file(s), for an error message (the folder itself when none is found)."""
    folder = Path(where)
    files = sorted(f.name for f in folder.glob("*.safetensors")) or sorted(f.name for f in folder.glob("*.bin"))
    if not files:
        return str(folder)
    return str(folder / files[0]) if len(files) == 1 else f"{folder}/{{{','.join(files)}}}"


def _check_loading_info(where: str | Path, info: dict) -> None:
    """Refuse a checkpoint whose weights and config disagree without a shape error: tensors the config
    has no place for (e.g. layers the config dropped), or places no tensor filled (they would stay
    randomly initialised, silently)."""
    problems = {what: info.get(key) or [] for what, key in
                (("missing from the weights", "missing_keys"), ("not in the config", "unexpected_keys"),
                 ("of another shape", "mismatched_keys"))}
    found = [f"{len(keys)} tensor(s) {what} (e.g. {sorted(map(str, keys))[0]})" for what, keys in problems.items() if keys]
    if found:
        raise DressError(f"the weights in {_weight_files(where)} do not match {Path(where) / 'config.json'}: "
                         f"{'; '.join(found)}; restore the folder so that both come from the same model")


# dress.json files written before rebuilds were named by registry key name a function by its path
_OLD_REBUILD_PATHS = {"dress.methods.slicegpt:rebuild": "slicegpt", "dress.methods.slicegpt.method:rebuild": "slicegpt",
                      "dress.methods.llm_surgeon.compact:rebuild": "llm-surgeon"}


def _replay_structure(model: nn.Module, rebuild: dict | None) -> None:
    """Structure hook: a method whose result is more than a narrower stock model (e.g. SliceGPT's
    gain-free norms with residual shortcuts) records ``{"method": <registry key>, "args": {...}}``
    under ``"rebuild"``; that method's ``rebuild`` reshapes a model built from the saved config in
    place, before the weights are loaded strictly."""
    if not rebuild:
        return
    name = rebuild.get("method") or _OLD_REBUILD_PATHS.get(str(rebuild.get("function", "")))
    spec = methods().get(str(name))
    if spec is None or spec.rebuild is None:
        raise DressError(f"dress.json asks to rebuild the structure of method {name or rebuild.get('function')!r}, "
                         "which this dress does not know; upgrade dress or re-prune the model")
    spec.rebuild_structure(model, rebuild.get("args", {}))


def _load_with_replay(path: Path, record: dict, dtype: torch.dtype) -> nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    removed = record.get("hidden_channels_removed") or []
    if removed:
        remove_hidden_channels(model, removed)
    _replay_structure(model, record.get("rebuild"))
    from safetensors import SafetensorError

    state = {}
    for shard in sorted(path.glob("*.safetensors")):
        try:
            state.update(load_file(shard))
        except SafetensorError as err:
            raise DressError(f"{shard} is damaged ({err}); restore the model folder (re-download or re-copy it)") from None
    if not state:
        raise DressError(f"{path} has no .safetensors weights")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # "size mismatch for ...": the shapes disagree with config.json + dress.json
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:200])
        raise DressError(f"the weights in {_weight_files(path)} do not match {path / 'config.json'} and "
                         f"{path / 'dress.json'} ({first}); restore the folder so that all come from one run") from None
    tied = {k for k in missing if k.endswith("lm_head.weight")} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise DressError(
            f"weights in {path} do not match the recorded pruning (missing {sorted(set(missing) - tied)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); the folder may be damaged"
        )
    return model.to(dtype).eval()
