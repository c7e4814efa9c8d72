"""Predicted (dress.memory_plan) vs measured peak memory per stage of `dress prune` on this CPU.

For each bundled model (SmolLM2-135M, Gemma3-270M) in fp32 and bf16 autocast, one short
`dress prune` runs in a fresh process (so the process's memory starts clean); its dress.json holds
both the plan (`memory_plan`, written before loading) and the measured peak within each stage
(`stages`, RSS sampled every 5 ms). Prints a markdown table and the ratio measured/predicted; the
goal is within +-20%.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory_plan.py [--models smollm2-135m gemma3-270m]
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory_plan.py --methods llm-surgeon --precisions fp32

(``--models M --precisions fp32 --json part.json`` runs one part; ``--combine part*.json`` prints
the table of several parts.)

Small step counts keep it to a few minutes on 2 cores: the memory of a step does not depend on
how many steps run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = ["--samples", "8", "--seq-len", "128", "--steps", "2", "--rft-steps", "2", "--eval-tokens", "2048"]
METHOD_SETTINGS = {"llm-surgeon": ["--surgeon-shots", "1", "--surgeon-samples", "8"]}  # one shot holds what five do
GOAL = 0.20


def run_one(model: str, bf16: bool, work: Path, method: str = "dress") -> dict:
    out = work / f"{model}-{method}-{'bf16' if bf16 else 'fp32'}"
    cmd = [sys.executable, "-m", "dress", "prune", model, "--out", str(out), "--overwrite", "--method", method,
           *SETTINGS, *METHOD_SETTINGS.get(method, []), "--bf16" if bf16 else "--no-bf16", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "dress.json").read_text())


def rows_of(record: dict, model: str, bf16: bool, method: str = "dress") -> list[dict]:
    plan = record.get("memory_plan", {})
    rows = []
    for stage, measured in record["stages"].items():
        if stage not in plan:
            continue
        predicted = plan[stage]["peak_gib"]
        rows.append({"model": model, "method": method, "precision": "bf16" if bf16 else "fp32", "stage": stage,
                     "predicted_gib": predicted, "measured_gib": measured["peak_memory_gib"],
                     "ratio": measured["peak_memory_gib"] / predicted})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"settings: {' '.join(SETTINGS)} (eval 4 x 512; CPU, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    print("| model | method | precision | stage | predicted GiB | measured GiB | measured / predicted |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        flag = "" if abs(r["ratio"] - 1) <= GOAL else " (outside +-20%)"
        print(f"| {r['model']} | {r.get('method', 'dress')} | {r['precision']} | {r['stage']} | {r['predicted_gib']:.2f} | "
              f"{r['measured_gib']:.2f} | {r['ratio']:.2f}{flag} |")
    inside = sum(abs(r["ratio"] - 1) <= GOAL for r in rows)
    print(f"\n{inside} of {len(rows)} stage peaks within +-{GOAL:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--methods", nargs="+", default=["dress"], help="methods to plan and run (default: dress)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--combine", nargs="+", type=Path, help="print one table from JSON files of earlier parts")
    args = parser.parse_args()
    if args.combine:
        print_table([row for path in args.combine for row in json.loads(path.read_text())])
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="dress-bench-mem-") as tmp:
        for model in args.models:
            for method in args.methods:
                for precision in args.precisions:
                    bf16 = precision == "bf16"
                    rows += rows_of(run_one(model, bf16, Path(tmp), method), model, bf16, method)
                    print(f"done: {model} {method} {precision}", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
