"""Export a (pruned) model for runtimes: an HF folder at a runtime-friendly width, and a GGUF file.

Contract of :func:`export_model`:

1. loads MODEL (a folder dress wrote, a bundled name, any stock Llama-family/Gemma3 checkpoint);
   models that need dress's own loader (OPT/Phi width-pruned, SliceGPT) are refused: no runtime
   can build them;
2. pads the hidden width with zero channels to the next multiple of ``alignment`` (32: the row
   length llama.cpp needs to quantize a matrix at all) when it is not one already. Padding is exact
   (:mod:`dress.pruning.pad`); the padded width may break transformers' ``hidden % heads`` rule
   (SmolLM2 at 448 with 9 heads), so the folder is for converters, which read ``head_dim``;
3. writes ``<out>/hf/``: ``config.json``, ``model.safetensors``, the tokenizer (readable by
   transformers 4 and 5, :mod:`dress.tokenizers_compat`) and ``export.json`` (what was done);
4. with ``gguf=True``, runs llama.cpp's own converter ``convert_hf_to_gguf.py`` on that folder
   (found from ``llama_cpp``, ``$LLAMA_CPP_DIR`` or ``PATH``; run by ``python``, ``$LLAMA_CPP_PYTHON``
   or this interpreter) and checks the GGUF with the ``gguf``
   package: every matrix that reads the residual stream has rows a multiple of 32, so
   ``llama-quantize`` quantizes it instead of keeping it in F16 (:func:`f16_fallback_tensors`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dress.adapters import adapter_for
from dress.errors import DressError
from dress.io.loading import load_model, resolve_model_path
from dress.io.record import give_default_permissions, read_record
from dress.io.saving import atomic_output_dir
from dress.logs import log
from dress.pruning.pad import pad_hidden_channels
from dress.pruning.widths import DEFAULT_ALIGNMENT, round_up
from dress.tokenizers_compat import make_portable

GGUF_OUTTYPES = ("f16", "bf16", "f32", "q8_0")
CONVERTER = "convert_hf_to_gguf.py"
QUANT_BLOCK = 32  # llama.cpp's smallest quantization block (Q8_0, Q4_0, Q5_0; K-quants fall back to these)


@dataclass
class ExportResult:
    hf_dir: Path
    width_before: int
    width: int
    gguf: Path | None = None
    unquantizable: list[str] = field(default_factory=list)  # tensors llama-quantize would keep in F16


def find_converter(llama_cpp: str | Path | None = None) -> Path | None:
    """llama.cpp's ``convert_hf_to_gguf.py``: in ``llama_cpp`` (a llama.cpp checkout), then
    ``$LLAMA_CPP_DIR``, then on ``PATH``."""
    for root in (llama_cpp, os.environ.get("LLAMA_CPP_DIR")):
        if root:
            candidate = Path(root).expanduser()
            candidate = candidate if candidate.is_file() else candidate / CONVERTER
            if candidate.is_file():
                return candidate
    found = shutil.which(CONVERTER)
    return Path(found) if found else None


def write_hf_folder(model, tokenizer, out: Path, note: dict) -> None:
    """Config, weights and tokenizer of ``model``, written without transformers' config validation
    (a padded width need not be a multiple of the head count)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config["architectures"] = [type(model).__name__]
    config["torch_dtype"] = config.get("dtype") or "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    give_default_permissions(out / "model.safetensors")
    if getattr(model, "generation_config", None) is not None:
        try:
            model.generation_config.save_pretrained(out)
        except (ValueError, TypeError):
            pass  # an unusual generation config is not worth failing an export for
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
        make_portable(out)
    (out / "export.json").write_text(json.dumps(note, indent=2) + "\n")


def export_model(
    spec: str | None, out: str | Path, *, alignment: int = DEFAULT_ALIGNMENT, gguf: bool = False,
    outtype: str = "f16", llama_cpp: str | Path | None = None, python: str | None = None, overwrite: bool = False,
    width: int | None = None,
) -> ExportResult:
    """See the module docstring. ``width``: pad to exactly this width instead (a multiple of
    ``alignment``, at least the model's; benchmarks use it to compare widths)."""
    import torch

    if alignment < 1:
        raise DressError(f"--align must be at least 1 (got {alignment})")
    if outtype not in GGUF_OUTTYPES:
        raise DressError(f"--outtype must be one of {', '.join(GGUF_OUTTYPES)} (got {outtype!r})")
    converter = None
    if gguf:
        converter = find_converter(llama_cpp)
        if converter is None:
            raise DressError(
                f"--gguf needs llama.cpp's {CONVERTER}: pass --llama-cpp DIR (a llama.cpp checkout, e.g. "
                "`git clone https://github.com/ggml-org/llama.cpp`) or set LLAMA_CPP_DIR; without --gguf the "
                "HF folder is written and any converter can take it"
            )
    _, path = resolve_model_path(spec)
    record = read_record(path) if path is not None else None
    if record and record.get("loader", "transformers") != "transformers":
        raise DressError(
            f"{spec} needs dress's own loader ({record.get('method')} on {record.get('model_type')}): no runtime "
            "can run it. Width methods (dress, direct, fpr) on Llama-family or Gemma3 models and depth methods "
            "give stock checkpoints that export."
        )
    loaded = load_model(spec, dtype=torch.float32)
    model = loaded.model
    adapter = adapter_for(model)
    d = adapter.hidden_size(model)
    if width is None:
        width = round_up(d, alignment)
    elif width < d or width % alignment:
        raise DressError(f"width {width} must be a multiple of {alignment} and at least the model's {d}")
    if width != d:
        pad_hidden_channels(model, width)
        log.info(f"hidden width {d} padded with {width - d} zero channels to {width} (a multiple of {alignment}; "
            "exact: norm gains rescaled)")
    note = {
        "source": loaded.source,
        "hidden_size": {"model": d, "exported": width},
        "alignment": alignment,
        "padding": "zero channels appended at the end; norm gains * sqrt(d/W), eps * d/W (output unchanged)"
        if width != d else None,
        "stock_transformers_loadable": width % int(model.config.num_attention_heads) == 0,
    }
    out = Path(out)
    with atomic_output_dir(out, overwrite) as tmp:
        write_hf_folder(model, loaded.tokenizer, tmp / "hf", note)
        del model
        result = ExportResult(hf_dir=out / "hf", width_before=d, width=width)
        if converter is not None:
            name = f"model-{outtype}.gguf"
            _convert(converter, python, tmp / "hf", tmp / name, outtype)
            result.gguf = out / name
            result.unquantizable = f16_fallback_tensors(tmp / name)
    if result.unquantizable:
        log.warning(f"{len(result.unquantizable)} tensors have rows that are not a multiple of "
            f"{QUANT_BLOCK}; llama-quantize will keep them in F16 (e.g. {result.unquantizable[0]})")
    return result


def _convert(converter: Path, python: str | None, hf_dir: Path, outfile: Path, outtype: str) -> None:
    """Run the converter with ``python`` (its own environment: llama.cpp pins transformers 4 and
    needs sentencepiece), else ``$LLAMA_CPP_PYTHON``, else this interpreter."""
    python = python or os.environ.get("LLAMA_CPP_PYTHON") or sys.executable
    cmd = [python, str(converter), str(hf_dir), "--outfile", str(outfile), "--outtype", outtype]
    log.info(" ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not outfile.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise DressError(f"llama.cpp's converter failed (exit {proc.returncode}):\n{tail}")


def f16_fallback_tensors(gguf_path: str | Path) -> list[str]:
    """Names of the 2-D weight tensors in a GGUF whose rows (``ne[0]``, the input width) are not a
    multiple of 32: llama-quantize cannot quantize them and keeps them in F16."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    bad = []
    for tensor in reader.tensors:
        shape = [int(n) for n in tensor.shape]
        if len(shape) >= 2 and tensor.name.endswith(".weight") and shape[0] % QUANT_BLOCK:
            bad.append(tensor.name)
    return bad
