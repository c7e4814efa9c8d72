"""LLM Surgeon sanity check on the bundled SmolLM2 (the map's T10, as numbers, not a test).

One shot of LLM Surgeon at a small target, three ways from the same curvature settings: the official
update (sum of the row and column updates), the sequential update (the joint optimum), and no update
(K-OBD: the same selection rule, only zeroing). Prints the held-out loss of each. The paper's order,
expected here too: with update <= without update.

    PYTHONPATH=src python benchmarks/llm_surgeon_sanity.py [--target 0.06] [--windows 8]
    PYTHONPATH=src python benchmarks/llm_surgeon_sanity.py --first 8 --count 8 --updates sum

``--first/--count`` take the curvature windows from the regularization part of the comparison's draw
(96 x 256, seed 0, split 3:1: docs/results/compare-25-cpu) instead of a draw of ``--windows``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from dress.data import calibration_samples, evaluation_text, load_text, parse_split, split_samples
from dress.evaluation.perplexity import perplexity, tokenize_once
from dress.io.loading import load_model
from dress.methods.llm_surgeon.config import LLMSurgeonConfig
from dress.methods.llm_surgeon.curvature import decoder_linears
from dress.adapters import adapter_for
from dress.methods.llm_surgeon.method import linear_entries, surgeon_prune


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.06, help="fraction of decoder linear entries to zero")
    parser.add_argument("--windows", type=int, default=8, help="calibration windows of 256 tokens")
    parser.add_argument("--eval-windows", type=int, default=8, help="held-out windows of 512 tokens")
    parser.add_argument("--first", type=int, default=None, help="first regularization window of the 96-window draw")
    parser.add_argument("--count", type=int, default=8, help="windows from --first")
    parser.add_argument("--updates", default="sum,sequential,none", help="comma-separated updates to compare")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model(None)
    if args.first is None:
        calib = calibration_samples(loaded.tokenizer, load_text("wiki"), args.windows, 256, 0)
    else:
        draw = calibration_samples(loaded.tokenizer, load_text("wiki"), 96, 256, 0)
        calib = split_samples(draw, parse_split("3:1"))[0][args.first : args.first + args.count]
    eval_ids = tokenize_once(loaded.tokenizer, evaluation_text("wiki"))
    dense = loaded.model
    ppl = perplexity(dense, eval_ids, 512, 4, max_windows=args.eval_windows)
    print(f"dense: held-out loss {ppl.nll_mean:.4f} (PPL {ppl.ppl:.2f})")
    budget = int(args.target * linear_entries(decoder_linears(dense, adapter_for(dense))))
    for update in args.updates.split(","):
        model = copy.deepcopy(dense)
        start = time.perf_counter()
        surgeon_prune(model, calib, budget, LLMSurgeonConfig(shots=1, update=update), log=lambda s: None)
        seconds = time.perf_counter() - start
        ppl = perplexity(model, eval_ids, 512, 4, max_windows=args.eval_windows)
        print(f"update={update:<10} zero {args.target:.0%} of linear entries: held-out loss {ppl.nll_mean:.4f} "
              f"(PPL {ppl.ppl:.2f}); {seconds:.0f} s")


if __name__ == "__main__":
    main()
