"""Overhead of ``dress.evaluation.perplexity`` over a bare batched forward loop on the same windows.

The goal (issue 4): ``perplexity()`` within 10% of the bare loop. Both run in this process, on the
same windows, alternately (bare, ours, bare, ours, ...) so drift hits both; medians are compared.

    .venv/bin/python benchmarks/bench_ppl_overhead.py                    # SmolLM2-135M-shaped random model
    .venv/bin/python benchmarks/bench_ppl_overhead.py --model smollm2-135m --seq-len 512 --windows 4

Without ``--model`` the model is a randomly initialised Llama with SmolLM2-135M's shape (d=576,
30 layers, vocabulary 49152): the timings depend on the shapes, not on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dress.evaluation.perplexity import make_windows, perplexity
from shapes import smollm2_shaped_model


def bare_loop(model: torch.nn.Module, windows: torch.Tensor, batch_size: int) -> None:
    """The floor: forward passes over the windows, logits produced and thrown away."""
    with torch.inference_mode():
        for start in range(0, windows.shape[0], batch_size):
            model(input_ids=windows[start : start + batch_size], use_cache=False).logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a model spec for dress.io.loading (default: SmolLM2-shaped random model)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    if args.model:
        from dress.io.loading import load_model

        model = load_model(args.model).model
    else:
        model = smollm2_shaped_model()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.config.vocab_size, (args.seq_len * args.windows + 7,), generator=gen)
    windows, _ = make_windows(tokens, args.seq_len)

    bare_loop(model, windows[:1], 1)  # warm-up
    bare_s, ours_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        bare_loop(model, windows, args.batch_size)
        bare_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        perplexity(model, tokens, seq_len=args.seq_len, batch_size=args.batch_size, progress=False)
        ours_s.append(time.perf_counter() - t0)

    bare, ours = statistics.median(bare_s), statistics.median(ours_s)
    print(f"model: {args.model or 'SmolLM2-135M-shaped random Llama'}; {windows.shape[0]} windows x {args.seq_len} "
          f"tokens, batch {args.batch_size}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"bare forward loop: {bare:.3f} s   (runs: {', '.join(f'{t:.3f}' for t in bare_s)})")
    print(f"perplexity():      {ours:.3f} s   (runs: {', '.join(f'{t:.3f}' for t in ours_s)})")
    print(f"ratio perplexity/bare: {ours / bare:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
