"""The pruned model where it is deployed: llama.cpp, dense against pruned, f16 / Q8_0 / Q4_K_M.

For each model (the bundled dense SmolLM2-135M and a pruned folder): ``dress export --gguf``
(zero-pads the width to a multiple of 32, then llama.cpp's own ``convert_hf_to_gguf.py``), then
``llama-quantize`` to each format (counting the tensors it had to keep in F16), then

* perplexity: ``llama-perplexity`` on the bundled held-out text against transformers on the same
  tokens and windows (llama.cpp's protocol: windows of ``--ppl-ctx`` tokens, the second half of
  each scored); f16 should agree within 0.1%;
* speed: ``llama-bench -p 512 -n 128`` (prompt processing and generation, tokens/s), dense and
  pruned interleaved round by round (one repetition per call), medians, printed as ratios.

``--extra-widths 480,512`` also pads the pruned model to those widths (speed only): is a multiple of
64 (448, 512) faster than one of 32 only (480)?

Needs a llama.cpp build (``llama-quantize``, ``llama-bench``, ``llama-perplexity`` under
``<llama.cpp>/build/bin``) and a python with llama.cpp's converter requirements (docs/evaluation.md
says how we built both from the llama-cpp-python 0.3.36 sdist). Not part of the test suite::

    LLAMA_CPP_DIR=~/llama.cpp LLAMA_CPP_PYTHON=~/venvs/convert/bin/python \\
        .venv/bin/python benchmarks/bench_llamacpp.py --pruned runs/demo --threads 2

Without ``--pruned`` it first runs ``dress prune --method dress --ratio 0.25`` (the demo, minutes).
Files are cached under ``--work``: a second run reuses the GGUFs (``--skip-ppl`` / ``--skip-speed``
run one half).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

FORMATS = ("f16", "Q8_0", "Q4_K_M")


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-3000:]}")
    return proc


def export(spec: str, folder: Path, width: int | None, python: str | None) -> Path:
    from dress.export import export_model

    gguf = folder / "model-f16.gguf"
    if not gguf.is_file():
        export_model(spec, folder, gguf=True, outtype="f16", python=python, width=width, overwrite=True)
    return gguf


def quantize(bin_dir: Path, f16: Path, fmt: str) -> tuple[Path, dict]:
    """``llama-quantize`` to ``fmt``; returns the file and the fallback types it used (from its log)."""
    if fmt == "f16":
        return f16, {}
    out = f16.with_name(f"model-{fmt}.gguf")
    log = out.with_suffix(".log")
    if not out.is_file():
        proc = sh([bin_dir / "llama-quantize", f16, out, fmt, "2"])
        log.write_text(proc.stdout + proc.stderr)
    fallbacks = Counter(re.findall(r"falling back to\s+(\S+)", log.read_text()))
    return out, dict(fallbacks)


def llama_ppl(bin_dir: Path, model: Path, text: Path, ctx: int, chunks: int, threads: int) -> float:
    proc = sh([bin_dir / "llama-perplexity", "-m", model, "-f", text, "-c", ctx, "--chunks", chunks, "-t", threads,
               "-b", ctx])
    found = re.findall(r"Final estimate: PPL = ([0-9.]+)", proc.stdout + proc.stderr)
    if not found:
        sys.exit(f"no PPL in llama-perplexity output for {model}")
    return float(found[-1])


def torch_ppl(spec: str, text: str, ctx: int, chunks: int, add_bos: bool) -> float:
    """llama.cpp's perplexity protocol in transformers: the same tokens, windows and scored positions."""
    import torch

    from dress.io.loading import load_model

    loaded = load_model(spec)
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids
    if add_bos:
        ids = [tok.bos_token_id] + ids
    ids = torch.tensor(ids)
    n = min(chunks, len(ids) // ctx)
    first = ctx // 2
    nll, count = 0.0, 0
    with torch.inference_mode():
        for i in range(n):
            window = ids[i * ctx:(i + 1) * ctx].clone()
            targets = window[first + 1:].clone()
            if add_bos:
                window[0] = tok.bos_token_id
            logits = model(window[None]).logits[0, first:ctx - 1].double()
            nll += -torch.log_softmax(logits, -1).gather(-1, targets[:, None]).sum().item()
            count += len(targets)
    return math.exp(nll / count)


def gguf_adds_bos(path: Path) -> bool:
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field.parts[field.data[0]][0]) if field is not None else False


def bench_once(bin_dir: Path, model: Path, p: int, n: int, threads: int) -> dict[str, float]:
    proc = sh([bin_dir / "llama-bench", "-m", model, "-p", p, "-n", n, "-t", threads, "-r", 1, "-o", "json"])
    rows = json.loads(proc.stdout)
    return {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pruned", help="a pruned model folder (default: prune the bundled model with dress at 25%%)")
    ap.add_argument("--dense", default="smollm2-135m")
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP_DIR"), help="llama.cpp checkout with build/bin")
    ap.add_argument("--python", default=os.environ.get("LLAMA_CPP_PYTHON"), help="python for the converter")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_llamacpp"))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-p", type=int, default=512, help="prompt tokens (llama-bench -p)")
    ap.add_argument("-n", type=int, default=128, help="generated tokens (llama-bench -n)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (dense, pruned, ...) per format")
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument("--ppl-chunks", type=int, default=16)
    ap.add_argument("--extra-widths", default="", help="also pad the pruned model to these widths (speed only)")
    ap.add_argument("--skip-ppl", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", type=Path, help="write the results here (default WORK/results.json)")
    args = ap.parse_args()
    if not args.llama_cpp:
        sys.exit("pass --llama-cpp DIR (a llama.cpp checkout with build/bin) or set LLAMA_CPP_DIR")
    bin_dir = Path(args.llama_cpp) / "build" / "bin"
    args.work.mkdir(parents=True, exist_ok=True)
    formats = args.formats.split(",")

    pruned = args.pruned
    if not pruned:
        pruned = str(args.work / "pruned-model")
        if not Path(pruned).is_dir():
            sh([sys.executable, "-m", "dress", "prune", "--method", "dress", "--ratio", "0.25", "--out", pruned])
    record = json.loads((Path(pruned) / "dress.json").read_text()) if (Path(pruned) / "dress.json").is_file() else {}

    models = {"dense": (args.dense, None), "pruned": (pruned, None)}
    for w in filter(None, args.extra_widths.split(",")):
        models[f"pruned@{w}"] = (pruned, int(w))
    files: dict[str, dict[str, Path]] = {}
    fallbacks: dict[str, dict[str, dict]] = {}
    for name, (spec, width) in models.items():
        f16 = export(spec, args.work / name.replace("@", "-"), width, args.python)
        files[name], fallbacks[name] = {}, {}
        for fmt in formats:
            files[name][fmt], fallbacks[name][fmt] = quantize(bin_dir, f16, fmt)
    result: dict = {
        "pruned": pruned, "dense": args.dense, "threads": args.threads, "p": args.p, "n": args.n,
        "rounds": args.rounds, "hidden_size": record.get("hidden_size"),
        "sizes_mib": {n: {f: round(p.stat().st_size / 2**20, 1) for f, p in fs.items()} for n, fs in files.items()},
        "quantize_fallbacks": fallbacks,
    }
    print("\nfile sizes (MiB) and llama-quantize fallbacks (tensor type -> count):")
    for name in files:
        for fmt in formats:
            print(f"  {name:<12} {fmt:<7} {result['sizes_mib'][name][fmt]:>7.1f}  {fallbacks[name][fmt] or '-'}")

    if not args.skip_ppl:
        from dress.data import evaluation_text

        text = evaluation_text("wiki")
        text_file = args.work / "ppl.txt"
        text_file.write_text(text)
        add_bos = gguf_adds_bos(files["dense"]["f16"])
        ppl: dict = {}
        for name in ("dense", "pruned"):
            ppl[name] = {"transformers_fp32": torch_ppl(models[name][0], text, args.ppl_ctx, args.ppl_chunks, add_bos)}
            for fmt in formats:
                ppl[name][fmt] = llama_ppl(bin_dir, files[name][fmt], text_file, args.ppl_ctx, args.ppl_chunks, args.threads)
        result["perplexity"] = {"ctx": args.ppl_ctx, "chunks": args.ppl_chunks, "text": "wiki (bundled held-out)",
                                **ppl}
        print(f"\nperplexity (llama.cpp protocol: {args.ppl_chunks} windows of {args.ppl_ctx}, second halves scored)")
        for name in ppl:
            ref = ppl[name]["transformers_fp32"]
            cells = "  ".join(f"{fmt} {ppl[name][fmt]:.4f} ({ppl[name][fmt] / ref - 1:+.3%})" for fmt in formats)
            print(f"  {name:<8} transformers {ref:.4f}  {cells}")

    if not args.skip_speed:
        runs: dict = {n: {f: {"pp": [], "tg": []} for f in formats} for n in files}
        for r in range(args.rounds):
            for fmt in formats:
                for name in files:  # dense, pruned, extra widths: interleaved
                    for k, v in bench_once(bin_dir, files[name][fmt], args.p, args.n, args.threads).items():
                        runs[name][fmt][k].append(v)
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
        speed = {n: {f: {k: statistics.median(v) for k, v in fs.items()} for f, fs in d.items()} for n, d in runs.items()}
        result["speed_tokens_per_s"] = {"median": speed, "all": runs}
        print(f"\nllama-bench -p {args.p} -n {args.n} -t {args.threads}, median of {args.rounds} interleaved rounds "
              "(tokens/s; ratio = model / dense)")
        print(f"  {'model':<12} {'format':<7} {'pp' + str(args.p):>9} {'ratio':>6} {'tg' + str(args.n):>9} {'ratio':>6}")
        for name in files:
            for fmt in formats:
                s, d = speed[name][fmt], speed["dense"][fmt]
                print(f"  {name:<12} {fmt:<7} {s['pp']:>9.1f} {s['pp'] / d['pp']:>5.2f}x {s['tg']:>9.1f} "
                      f"{s['tg'] / d['tg']:>5.2f}x")

    out = args.json or args.work / "results.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
