"""What glibc's heap costs a CPU training stage, and what fixing its mmap threshold would save.

glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed; from then on a
training step's activations come from the heap, which keeps freed blocks for reuse, so the process
holds more than the live tensors (the memory plan's "allocator retention" term on CPU).
``MALLOC_MMAP_THRESHOLD_=131072`` fixes the threshold: every tensor over 128 KiB is its own mapping,
handed back when freed, at the price of page faults on every large allocation.

One LoRA recovery (dress.training.recovery.recover, the stage that measured +32% over the plan in
`make demo` before the term existed) on the bundled SmolLM2-135M, in fresh processes, alternately
with glibc's default and with the fixed threshold: seconds per step and the process's peak resident
memory above what it held before training (RSS sampled every 5 ms). Prints one row per run and the
ratios fixed / default.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_allocator.py [--steps 24] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def child(fixed: bool, steps: int, seq_len: int) -> dict:
    import time

    import psutil
    import torch

    from dress.data import calibration_samples
    from dress.io.loading import load_model
    from dress.memory_meter import StagePeak
    from dress.training.config import RecoveryConfig
    from dress.training.recovery import recover

    assert fixed == ("MALLOC_MMAP_THRESHOLD_" in os.environ)
    torch.manual_seed(0)
    loaded = load_model("smollm2-135m")
    samples = calibration_samples(loaded.tokenizer, "wiki", steps, seq_len, 0)
    before = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    with StagePeak("cpu") as meter:
        recover(loaded.model, samples, RecoveryConfig(steps=steps, batch_size=1), seed=0)
    seconds = time.perf_counter() - t0
    return {"fixed": fixed, "seconds_per_step": seconds / steps, "peak_above_start_gib": (meter.peak - before) / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["fixed", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "fixed", args.steps, args.seq_len)))
        return
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    rows = []
    for _ in range(args.repeats):
        for mode in ("default", "fixed"):  # interleaved: drift on a shared machine hits both alike
            cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--seq-len", str(args.seq_len)]
            run_env = dict(env, MALLOC_MMAP_THRESHOLD_="131072") if mode == "fixed" else env
            out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{mode:8s} {rows[-1]['seconds_per_step']:.3f} s/step  peak +{rows[-1]['peak_above_start_gib']:.3f} GiB",
                  flush=True)

    def median(fixed: bool, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["fixed"] == fixed)

    print(f"\nLoRA recovery, SmolLM2-135M fp32, {args.steps} steps of 1 x {args.seq_len}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, medians of {args.repeats}")
    print("| allocator | s/step | peak above start (GiB) |\n|---|---|---|")
    for fixed, name in ((False, "glibc default (dynamic threshold)"), (True, "threshold fixed at 128 KiB")):
        print(f"| {name} | {median(fixed, 'seconds_per_step'):.3f} | {median(fixed, 'peak_above_start_gib'):.3f} |")
    print(f"time fixed/default {median(True, 'seconds_per_step') / median(False, 'seconds_per_step'):.2f}x, "
          f"peak fixed/default {median(True, 'peak_above_start_gib') / median(False, 'peak_above_start_gib'):.2f}x")


if __name__ == "__main__":
    main()
