"""Cost of the DReSS penalty: a regularized training step against the same plain step.

The goal (issue 3): a regularized step takes at most 10% longer. Both steps run in this process on
the same model shape and batch, alternately (plain, regularized, plain, ...) so drift hits both;
medians are compared. A regularized step is the plain step (forward, backward, AdamW) plus
:func:`dress.methods.dress.penalty.proximal_step` on every group of the removed channels.

    .venv/bin/python benchmarks/bench_reg_overhead.py                   # SmolLM2-shaped, 25%, l2
    .venv/bin/python benchmarks/bench_reg_overhead.py --norm l1 --seq-len 512
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dress.methods.dress.penalty import channel_groups, group_scales, proximal_step
from shapes import smollm2_shaped_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--norm", choices=["l2", "l1"], default="l2")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    model = smollm2_shaped_model().train()
    d = model.config.hidden_size
    removed = list(range(d - round(args.ratio * d), d))
    slices = channel_groups(model, removed)
    scales = group_scales(slices, norm=args.norm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0))

    def plain_step() -> None:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def regularized_step() -> None:
        plain_step()
        proximal_step(slices, args.norm, 1e-4, scales=scales)

    def penalty_only() -> None:
        proximal_step(slices, args.norm, 1e-4, scales=scales)

    plain_step(), regularized_step()  # warm-up (allocates optimizer state)
    times: dict[str, list[float]] = {"plain": [], "regularized": [], "penalty": []}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain_step), ("regularized", regularized_step), ("penalty", penalty_only)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"SmolLM2-135M-shaped random Llama; {len(removed)} of {d} channels regularized ({len(slices)} tensors), "
          f"{args.norm}; batch {args.batch_size} x {args.seq_len} tokens; {torch.get_num_threads()} threads; "
          f"median of {args.repeats}")
    for name in ("plain", "regularized", "penalty"):
        print(f"{name + ' step:':<18} {med[name]:.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times[name])})")
    print(f"overhead regularized/plain: {med['regularized'] / med['plain']:.3f}  (goal <= 1.10); "
          f"penalty alone is {med['penalty'] / med['plain']:.1%} of a plain step")


if __name__ == "__main__":
    main()
