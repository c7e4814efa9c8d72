"""Does the hidden width's alignment matter in PyTorch on this CPU? (issue 20: 32 or 64?)

Builds SmolLM2-135M-shaped random models (timings depend on shapes, not weights) at several hidden
widths — channels removed (to a multiple of the 9 heads) and then zero-padded to the width asked,
so attention, FFN and vocabulary stay SmolLM2's — and times them interleaved, fp32: prefill
(1 x ``--prompt-len`` tokens) and greedy generation (``--gen-batch`` x ``--new-tokens``). If
alignment mattered, a multiple of 64 (448, 512) would sit below the line through the others, and
the unaligned 432 above it. Prints seconds, and seconds per width relative to the dense 576.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_widths.py --threads 2

llama.cpp's side of the same question is ``benchmarks/bench_llamacpp.py --extra-widths 480,512``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dress.pruning.hidden import remove_hidden_channels
from dress.pruning.pad import pad_hidden_channels
from shapes import smollm2_shaped_model


def model_at(width: int) -> torch.nn.Module:
    model = smollm2_shaped_model()
    if width == 576:
        return model
    kept = width - width % 9  # a multiple of the heads, then zero-padded up to ``width``
    remove_hidden_channels(model, list(range(kept, 576)))
    pad_hidden_channels(model, width)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="416,432,448,480,512,576")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--gen-prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    models = {w: model_at(w) for w in widths}
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 49152, (1, args.prompt_len), generator=g)
    gen_prompts = torch.randint(0, 49152, (args.gen_batch, args.gen_prompt_len), generator=g)

    def prefill(m):
        m(input_ids=prompt, use_cache=False)

    def generate(m):
        m.generate(input_ids=gen_prompts, attention_mask=torch.ones_like(gen_prompts), do_sample=False,
                   max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)

    times = {w: {"prefill": [], "generate": []} for w in widths}
    with torch.inference_mode():
        for i in range(1 + args.repeats):  # the first round warms up
            for name, fn in (("prefill", prefill), ("generate", generate)):
                for w in widths:
                    t0 = time.perf_counter()
                    fn(models[w])
                    if i:
                        times[w][name].append(time.perf_counter() - t0)
    med = {w: {k: statistics.median(v) for k, v in t.items()} for w, t in times.items()}
    ref = med.get(576)
    print(f"fp32, {args.threads} threads, median of {args.repeats} interleaved rounds; prefill 1x{args.prompt_len}, "
          f"generate {args.gen_batch}x{args.new_tokens}")
    print(f"{'width':>6} {'mult32':>6} {'mult64':>6} {'prefill s':>10} {'vs 576':>7} {'generate s':>11} {'vs 576':>7}")
    for w in widths:
        p, q = med[w]["prefill"], med[w]["generate"]
        rp = f"{ref['prefill'] / p:.3f}x" if ref else "-"
        rq = f"{ref['generate'] / q:.3f}x" if ref else "-"
        print(f"{w:>6} {str(w % 32 == 0):>6} {str(w % 64 == 0):>6} {p:>10.3f} {rp:>7} {q:>11.3f} {rq:>7}")


if __name__ == "__main__":
    main()
