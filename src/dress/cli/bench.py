"""``dress bench``: speed of a (pruned) model against its dense original, in one run.

Protocol: :mod:`dress.evaluation.bench` (SLEB's; the paper's Table 2). Prints a table with the
sizes used, writes ``--json FILE`` if asked, and appends to MODEL's ``dress.json`` under
``"benchmarks"`` when MODEL is a folder dress pruned.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from pathlib import Path

from dress.errors import DressError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="prefill latency and generation throughput against the dense model",
        description=(
            "Time MODEL against DENSE in one run, interleaved: prefill latency (batch 1, --prompt-len tokens) "
            "and generation throughput (--gen-batch prompts, exactly --new-tokens greedy tokens). "
            "GPU defaults are the paper's (2048; 64 x 128); CPU defaults are smaller (512; 8 x 32)."
        ),
    )
    p.add_argument("model", help="the pruned model: folder, bundled name, or hub id")
    p.add_argument("--against", metavar="DENSE", help="the dense model (default: the source_model in MODEL's dress.json)")
    p.add_argument("--prompt-len", type=int, help="prefill prompt length (default GPU 2048, CPU 512)")
    p.add_argument("--gen-batch", type=int, help="generation batch size (default GPU 64, CPU 8)")
    p.add_argument("--gen-prompt-len", type=int, help="prompt length for generation (default 32)")
    p.add_argument("--new-tokens", type=int, help="tokens generated per sequence (default GPU 128, CPU 32)")
    p.add_argument("--repeats", type=int, help="timed runs per measurement and model (default GPU 10, CPU 5)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default GPU 2, CPU 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--device", help="cpu, cuda, ... (default cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="weights' dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the result as JSON to FILE")
    return p


def _against(args) -> str:
    if args.against:
        return args.against
    from dress.io.record import read_record

    record = read_record(args.model) if Path(args.model).is_dir() else None
    if record and record.get("source_model"):
        return str(record["source_model"])
    raise DressError("pass --against DENSE: the dense model to compare with (MODEL has no dress.json naming its source)")


def run(args) -> int:
    import torch

    from dress.environment import resolve_device
    from dress.evaluation.bench import BenchSettings, benchmark
    from dress.io.loading import load_model
    from dress.io.record import append_to_record, write_json_atomic

    device = str(resolve_device(args.device))
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if torch.device(device).type == "cuda" else "float32")
    overrides = {
        k: getattr(args, k)
        for k in ("prompt_len", "gen_batch", "gen_prompt_len", "new_tokens", "repeats", "warmup")
        if getattr(args, k) is not None
    }
    settings = dataclasses.replace(BenchSettings.defaults(device), **overrides)
    settings.validate()
    if args.threads is not None:
        if args.threads < 1:
            raise DressError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    dense_spec = _against(args)

    dtype = getattr(torch, dtype_name)
    pruned = load_model(args.model, dtype=dtype, device=device)
    dense = load_model(dense_spec, dtype=dtype, device=device)
    result = benchmark(
        pruned.model, dense.model, settings, device=device,
        pruned_folder=pruned.path, dense_folder=dense.path,
    )
    entry = {
        "command": "bench",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": pruned.source,
        "against": dense.source,
        "dtype": dtype_name,
        **result,
    }
    print(render(entry))
    if args.json:
        write_json_atomic(args.json, entry)
    if pruned.path is not None and append_to_record(pruned.path, "benchmarks", entry):
        print(f"appended to {Path(pruned.path) / 'dress.json'} under \"benchmarks\"")
    return 0


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def render(entry: dict) -> str:
    """The screen report of one ``dress bench`` result."""
    from dress.reporting.tables import Column, format_pairs, format_table

    s, env, r = entry["settings"], entry["environment"], entry["ratios"]
    header = [
        f"dress bench: {entry['model']} against {entry['against']}",
        format_pairs([
            ("device", f"{env['device']}{' (' + env['gpu'] + ')' if env.get('gpu') else ''}, {entry['dtype']}, "
                       f"torch {env['torch']}, {env['torch_threads']} threads of {env['cpu_count']} CPUs"),
            ("prefill", f"batch 1 x {s['prompt_len']} tokens, one forward pass"),
            ("generation", f"batch {s['gen_batch']}, prompt {s['gen_prompt_len']}, exactly {s['new_tokens']} new tokens, greedy"),
            ("repeats", f"{s['repeats']} timed after {s['warmup']} warm-up, interleaved dense/pruned; median [min, max]"),
        ]),
    ]
    rows = []
    for name in ("dense", "pruned"):
        m = entry["models"][name]
        pre, gen = m["prefill"], m["generate"]
        rows.append({
            "model": name,
            "params": m["params"],
            "hidden": m["hidden_size"],
            "disk_mib": _mib(m["bytes_on_disk"]),
            "attn": m["attn_implementation"],
            "prefill": f"{pre['median_s'] * 1e3:.1f} [{pre['min_s'] * 1e3:.1f}, {pre['max_s'] * 1e3:.1f}]",
            "gen": f"{gen['per_s_median']:.1f} [{gen['per_s_min']:.1f}, {gen['per_s_max']:.1f}]",
            "work_mib": _mib(m["peak_working_bytes"]),
        })
    table = format_table(rows, [
        Column("model"), Column("params", "params", ",d"), Column("hidden"), Column("disk_mib", "disk MiB", ".1f"),
        Column("attn"), Column("prefill", "prefill ms"), Column("gen", "gen tokens/s"),
        Column("work_mib", "peak work MiB", ".1f"),
    ])
    ratios = format_pairs([
        ("params removed", f"{r['param_fraction_removed']:.1%}  -> ideal speedup 1/(1-r) = {r['ideal_speedup']:.3f}x"),
        ("prefill speedup", f"{r['prefill_speedup']:.3f}x  ({r['prefill_of_ideal']:.0%} of ideal)"),
        ("generation speedup", f"{r['generation_speedup']:.3f}x  ({r['generation_of_ideal']:.0%} of ideal)"),
    ])
    return "\n".join(header + ["", table, "", ratios])
