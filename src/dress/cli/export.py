"""``dress export``: a model folder for runtimes (llama.cpp, ollama, LM Studio), see :mod:`dress.export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dress.export import GGUF_OUTTYPES
from dress.pruning.widths import DEFAULT_ALIGNMENT


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="write MODEL for runtimes: an HF folder at a width llama.cpp can quantize, and a GGUF file",
        description=(
            "Pad MODEL's hidden width with zero channels to a multiple of --align (exact: the output does not "
            "change) and write OUT/hf/ (config, safetensors, a tokenizer transformers 4 and 5 both read). "
            "With --gguf, also convert it with llama.cpp's own convert_hf_to_gguf.py to OUT/model-<outtype>.gguf, "
            "ready for llama-quantize (Q8_0, Q4_K_M, ...) with no F16 fallback."
        ),
    )
    p.add_argument("model", nargs="?", help="the model: a folder dress wrote, a bundled name, or a hub id")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--align", type=int, default=DEFAULT_ALIGNMENT,
                   help=f"pad the hidden width to a multiple of this (default {DEFAULT_ALIGNMENT}: llama.cpp's "
                   "quantization block; 1: no padding)")
    p.add_argument("--gguf", action="store_true", help="also convert to GGUF with llama.cpp's convert_hf_to_gguf.py")
    p.add_argument("--outtype", choices=GGUF_OUTTYPES, default="f16", help="GGUF tensor type (default f16)")
    p.add_argument("--llama-cpp", metavar="DIR",
                   help="llama.cpp checkout holding convert_hf_to_gguf.py (default: $LLAMA_CPP_DIR, then PATH)")
    p.add_argument("--python", metavar="PY",
                   help="interpreter with llama.cpp's requirements (requirements/requirements-convert_hf_to_gguf.txt) "
                   "to run the converter (default: $LLAMA_CPP_PYTHON, then this one)")
    return p


def run(args) -> int:
    from dress.export import export_model

    result = export_model(
        args.model, args.out, alignment=args.align, gguf=args.gguf, outtype=args.outtype,
        llama_cpp=args.llama_cpp, python=args.python, overwrite=args.overwrite,
    )
    print(f"dress export: {args.model or 'smollm2-135m'} -> {args.out}")
    print(f"  hidden width {result.width_before}" + (f" -> {result.width} (zero-padded, exact)" if result.width != result.width_before else " (already aligned)"))
    print(f"  HF folder    {result.hf_dir}")
    if result.gguf:
        print(f"  GGUF         {result.gguf}")
        print(f"  quantize     llama-quantize {result.gguf} {Path(args.out) / 'model-Q4_K_M.gguf'} Q4_K_M")
    return 0
