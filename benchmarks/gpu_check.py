"""The GPU check (issue 16): everything a first CUDA run must show, in one offline script.

For each bundled model (SmolLM2-135M, Gemma3-270M; no hub needed):

1. the memory plan before loading (:mod:`dress.memory_plan`), then ``dress prune`` with DReSS on
   CUDA in bf16 (``run_prune``: the same path as the CLI, memory check included);
2. peak memory per stage, measured (``torch.cuda.max_memory_allocated`` after a reset, per stage)
   against the plan;
3. the paper's speed protocol, dense vs pruned in one process (:func:`dress.evaluation.bench.benchmark`):
   prefill latency of one 2048-token prompt, decode throughput at batch 64 x 128 new tokens, bf16;
4. held-out perplexity of the pruned model in bf16 weights vs fp32 weights (same windows).

Writes one JSON (``--out``, default gpu_check.json) and prints a short summary. Budget: under
10 minutes on one H100/H200. ``--smoke`` runs the same code on tiny settings (CPU allowed: the CI
test runs it on a tiny local model with ``--models``), so the script is known to work before a GPU
ever runs it.

    python benchmarks/gpu_check.py --out gpu_check.json            # on the GPU machine
    python benchmarks/gpu_check.py --smoke --device cpu --out /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

FULL = {"samples": 256, "seq_len": 1024, "steps": 64, "rft_steps": 32, "eval_seq_len": 2048, "eval_tokens": 2048 * 16,
        "bench": dict(prompt_len=2048, gen_batch=64, gen_prompt_len=32, new_tokens=128, repeats=5, warmup=2)}
SMOKE = {"samples": 4, "seq_len": 32, "steps": 1, "rft_steps": 1, "eval_seq_len": 32, "eval_tokens": 128,
         "bench": dict(prompt_len=32, gen_batch=2, gen_prompt_len=8, new_tokens=4, repeats=1, warmup=0)}


def check_model(model: str, sizes: dict, device: str, work: Path, calib: str, eval_source: str) -> dict:
    from dress.config import PruneConfig
    from dress.evaluation.bench import BenchSettings, benchmark
    from dress.evaluation.perplexity import perplexity, tokenize_once
    from dress.io.loading import load_model
    from dress.pipeline import run_prune

    bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    config = PruneConfig.model_validate({
        "model": model, "method": "dress", "ratio": 0.25, "device": device, "bf16": True, "preset": "cpu-demo",
        "data": {"calib": calib, "samples": sizes["samples"], "seq_len": sizes["seq_len"]},
        "regularize": {"steps": sizes["steps"], "warmup_steps": 1, "lam": 1.5},
        "recovery": {"steps": sizes["rft_steps"]},
        "evaluate": {"source": eval_source, "seq_len": sizes["eval_seq_len"], "max_tokens": sizes["eval_tokens"]},
    })
    out = work / model.replace("/", "_")
    t0 = time.perf_counter()
    record = run_prune(config, out, overwrite=True)
    seconds = time.perf_counter() - t0
    plan = record.get("memory_plan", {})
    # on CUDA the measured peak is torch's allocator (max_memory_allocated); the plan's figure also holds the
    # CUDA context, so the comparable prediction is the plan minus its "CUDA context" term
    memory = {stage: {"measured_gib": s["peak_memory_gib"],
                      "planned_gib": (plan[stage]["peak_gib"] - plan[stage].get("CUDA context", 0.0)) if stage in plan else None}
              for stage, s in record["stages"].items()}

    dense = load_model(model).model.to(device)
    pruned = load_model(str(out)).model.to(device)
    if bf16 or device == "cpu":
        dense, pruned = dense.to(torch.bfloat16), pruned.to(torch.bfloat16)
    speed = benchmark(pruned, dense, BenchSettings(**sizes["bench"]), device=device, pruned_folder=out, progress=False)
    del dense

    from dress.data import evaluation_text

    tok = load_model(str(out)).tokenizer
    ids = tokenize_once(tok, evaluation_text(eval_source))
    windows = max(1, sizes["eval_tokens"] // sizes["eval_seq_len"])
    ppl_bf16 = perplexity(pruned, ids, sizes["eval_seq_len"], 4, max_windows=windows, progress=False).ppl
    ppl_fp32 = perplexity(pruned.float(), ids, sizes["eval_seq_len"], 4, max_windows=windows, progress=False).ppl
    del pruned
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "model": model, "prune_seconds": round(seconds, 1), "bf16": record["config"]["bf16"],
        "preserved_ratio": record["report"]["regularization"]["preserved_ratio"],
        "prune_gap_nats": record["report"].get("prune_gap_nats"),
        "ppl": {"dense": record["evaluation"]["held_out"]["dense"]["ppl"],
                "pruned": record["evaluation"]["held_out"]["pruned"]["ppl"],
                "pruned_bf16_weights": ppl_bf16, "pruned_fp32_weights": ppl_fp32},
        "memory_gib": memory, "speed": speed["ratios"],
        "speed_detail": {k: {"prefill_s": v["prefill"], "generate": v["generate"]} for k, v in speed["models"].items()},
        "size_on_disk": record.get("size_on_disk"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dress GPU check (issue 16)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny settings; runs on CPU in a minute")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--calib", default="wiki", help="calibration text (default: bundled)")
    parser.add_argument("--eval-source", default="wiki")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device; use --smoke --device cpu", file=sys.stderr)
        return 2
    sizes = SMOKE if args.smoke else FULL
    results = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "smoke": args.smoke, "sizes": sizes, "torch": torch.__version__, "models": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dress-gpu-check-") as tmp:
        for model in args.models:
            results["models"].append(check_model(model, sizes, args.device, Path(tmp), args.calib, args.eval_source))
            args.out.write_text(json.dumps(results, indent=2))  # partial results survive a timeout
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=2))
    for m in results["models"]:
        worst = max((abs(v["measured_gib"] / v["planned_gib"] - 1) for v in m["memory_gib"].values()
                     if v["planned_gib"]), default=float("nan"))
        print(f"{m['model']}: ppl dense {m['ppl']['dense']:.2f} -> pruned {m['ppl']['pruned']:.2f} "
              f"(bf16 weights {m['ppl']['pruned_bf16_weights']:.2f}, fp32 {m['ppl']['pruned_fp32_weights']:.2f}); "
              f"prefill x{m['speed']['prefill_speedup']:.2f}, decode x{m['speed']['generation_speedup']:.2f}; "
              f"memory vs plan worst {worst:+.0%}")
    print(f"wrote {args.out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
