"""``dress prune``: the whole job in one command (see :mod:`dress.pipeline`).

Options map one-to-one onto :class:`dress.config.PruneConfig`; ``--config FILE`` reads a JSON/YAML
config (e.g. the ``config`` block of a previous ``dress.json``) and command-line options override it.
The same command runs under ``torchrun`` / ``accelerate launch`` (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from typing import get_args

from dress.config import Method, PruneConfig
from dress.errors import DressError

ON_INTERRUPT = "; rerun with --resume to continue from the last checkpoint in <out>.checkpoints/"

# option dest -> dotted PruneConfig field
_FIELDS = {
    "model": "model", "method": "method", "ratio": "ratio", "selection": "selection", "device": "device",
    "seed": "seed", "bf16": "bf16",
    "calib": "data.calib", "samples": "data.samples", "seq_len": "data.seq_len", "split": "data.split",
    "data_seed": "data.seed",
    "norm": "regularize.norm", "lam": "regularize.lam", "steps": "regularize.steps", "lr": "regularize.lr",
    "warmup_steps": "regularize.warmup_steps", "batch_size": "regularize.batch_size",
    "grad_accum": "regularize.grad_accum", "gradient_checkpointing": "regularize.gradient_checkpointing",
    "checkpoint_every": "regularize.checkpoint_every",
    "rft": "recovery.enabled", "rft_mode": "recovery.mode", "rft_steps": "recovery.steps", "rft_lr": "recovery.lr",
    "rft_batch_size": "recovery.batch_size", "rft_grad_accum": "recovery.grad_accum",
    "lora_rank": "recovery.rank", "lora_alpha": "recovery.alpha", "lora_targets": "recovery.targets",
    "eval": "evaluate.enabled", "eval_source": "evaluate.source", "eval_seq_len": "evaluate.seq_len",
    "eval_tokens": "evaluate.max_tokens",
    "layers": "depth.layers", "score_samples": "depth.score_samples", "score_batch_size": "depth.batch_size",
    "trsp_lam1": "trsp.lam1", "trsp_lam2": "trsp.lam2", "trsp_steps1": "trsp.steps1", "trsp_steps2": "trsp.steps2", "trsp_shrink2": "trsp.shrink2",
    "trsp_train1": "trsp.train1", "trsp_lr": "trsp.lr", "trsp_gate_lr": "trsp.gate_lr",
    "trsp_batch_size": "trsp.batch_size", "trsp_grad_accum": "trsp.grad_accum",
    "distill": "distill.weight", "distill_temperature": "distill.temperature",
    "surgeon_shots": "llm_surgeon.shots", "surgeon_samples": "llm_surgeon.samples",
    "surgeon_update": "llm_surgeon.update", "surgeon_target": "llm_surgeon.target",
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prune",
        help="prune a model (DReSS by default) and save a smaller checkpoint",
        description="Regularize -> prune -> recover -> evaluate, and save a smaller model. "
        "MODEL is a bundled name (smollm2-135m, gemma3-270m), a local folder or a hub id; "
        "omitted, the bundled smollm2-135m. Defaults finish on a 2-core CPU; see docs/ for paper scale.",
    )
    a = p.add_argument
    a("model", nargs="?", help="model to prune (default: bundled smollm2-135m)")
    a("--out", required=True, type=Path, help="output folder for the pruned model")
    a("--overwrite", action="store_true", help="replace --out if it exists")
    a("--resume", action="store_true", help="continue an interrupted run from <out>.checkpoints/")
    a("--config", type=Path, help="JSON config file (PruneConfig fields); options below override it")
    a("--method", choices=list(get_args(Method)),
      help="dress (default); fpr (all channels regularized); direct (no regularization); "
      "slicegpt; sleb, shortgpt, trsp (remove whole layers); llm-surgeon (curvature-based rows and columns)")
    a("--ratio", type=float, help="fraction to remove (default 0.25): of the hidden width (width methods), "
      "or of the parameters, in whole layers (sleb, shortgpt, trsp)")
    a("--selection", choices=["last", "activation", "weight"], help="which channels (default activation)")
    g = p.add_argument_group("calibration data")
    g.add_argument("--calib", help="wiki|books (bundled), wikitext2|ptb|c4|alpaca (hub), or a .txt/.jsonl file")
    g.add_argument("--samples", type=int, help="number of calibration windows")
    g.add_argument("--seq-len", type=int, help="tokens per calibration window")
    g.add_argument("--split", help="regularization:recovery split of the samples, e.g. 3:1")
    g.add_argument("--data-seed", type=int)
    g = p.add_argument_group("regularization")
    g.add_argument("--norm", choices=["l2", "l1"])
    g.add_argument("--lam", type=float, help="penalty strength, unit-free: the penalty alone removes LAM times each group's starting size over "
                   "the run (1: zero at the last step, 2: about halfway; default 1.5; see dress.regularize)")
    g.add_argument("--steps", type=int, help="optimizer steps")
    g.add_argument("--lr", type=float)
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--grad-accum", type=int)
    g.add_argument("--gradient-checkpointing", action="store_true", default=None)
    g.add_argument("--checkpoint-every", type=int, help="write a resumable checkpoint every K steps")
    g = p.add_argument_group("layer removal (sleb, shortgpt, trsp)")
    g.add_argument("--layers", type=int, help="remove exactly this many layers (default: closest to --ratio "
                   "of the parameters)")
    g.add_argument("--score-samples", type=int, help="calibration windows that score layers (default: all)")
    g.add_argument("--score-batch-size", type=int, help="windows per scoring forward")
    g.add_argument("--trsp-lam1", type=float, help="stage 1: l1 weight on the layer gates")
    g.add_argument("--trsp-lam2", type=float, help="stage 2: weight of the chosen layers' relative update norm")
    g.add_argument("--trsp-steps1", type=int, help="stage 1 optimizer steps")
    g.add_argument("--trsp-steps2", type=int, help="stage 2 optimizer steps")
    g.add_argument("--trsp-shrink2", type=float, help="stage 2: proximal shrink of the chosen layers' gates, unit-free "
                   "like --lam (1.5: zero at ~40%% of stage 2; 0: the loss penalty only)")
    g.add_argument("--trsp-train1", choices=["gates", "all"], help="stage 1 trains only the gates, or all parameters")
    g.add_argument("--trsp-lr", type=float, help="learning rate of the weights")
    g.add_argument("--trsp-gate-lr", type=float, help="learning rate of the gates")
    g.add_argument("--trsp-batch-size", type=int)
    g.add_argument("--trsp-grad-accum", type=int)
    g = p.add_argument_group("LLM Surgeon (llm-surgeon; more settings under llm_surgeon in --config)")
    g.add_argument("--surgeon-shots", type=int, help="shots of the linear schedule, curvature re-estimated each "
                   "(default 5; official: 40 to 50%%)")
    g.add_argument("--surgeon-samples", type=int, help="calibration windows for the curvature (default 32)")
    g.add_argument("--surgeon-update", choices=["sum", "sequential", "none"], help="weight update (default sum, "
                   "as the official code)")
    g.add_argument("--surgeon-target", choices=["params", "linear"], help="--ratio counts all parameters "
                   "(default; zeroed entries, matched to what width/depth methods remove) or the decoder linear "
                   "entries (the official definition)")
    g = p.add_argument_group("recovery fine-tuning (LoRA)")
    g.add_argument("--no-rft", dest="rft", action="store_false", default=None, help="skip recovery")
    g.add_argument("--rft-mode", choices=["lora", "full"], help="lora (default, merged after training) or full "
                   "fine-tuning of every parameter")
    g.add_argument("--rft-steps", type=int)
    g.add_argument("--rft-lr", type=float)
    g.add_argument("--rft-batch-size", type=int)
    g.add_argument("--rft-grad-accum", type=int)
    g.add_argument("--lora-rank", type=int)
    g.add_argument("--lora-alpha", type=float)
    g.add_argument("--lora-targets", type=lambda s: s.split(","), help="comma-separated module names")
    g = p.add_argument_group("distillation (every training stage, every method)")
    g.add_argument("--distill", type=float, metavar="W", help="weight of the KL to the dense model's next-token "
                   "distribution; the LM loss gets 1-W (default 0: off; 1: distillation only)")
    g.add_argument("--distill-temperature", type=float, help="softmax temperature of the distillation loss (default 1)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--no-eval", dest="eval", action="store_false", default=None)
    g.add_argument("--eval-source", help="held-out text (default wiki, the bundled evaluation part)")
    g.add_argument("--eval-seq-len", type=int)
    g.add_argument("--eval-tokens", type=int, help="evaluate on at most this many tokens")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (default on GPU)")
    g.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 everywhere, also on GPU")
    g.add_argument("--seed", type=int)
    return p


def config_from_args(args: argparse.Namespace) -> PruneConfig:
    base: dict = {}
    if args.config:
        base = _read_config_file(args.config)
    for dest, dotted in _FIELDS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        node = base
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return PruneConfig.model_validate(base)
    except ValidationError as err:
        raise DressError(_explain(err)) from None


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise DressError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        data = yaml.safe_load(text)
    if isinstance(data, dict) and "config" in data and "method" not in data:
        data = data["config"]  # a dress.json
    if not isinstance(data, dict):
        raise DressError(f"{path} does not hold a config object")
    return data


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"])
        option = "--" + where.split(".")[-1].replace("_", "-")
        lines.append(f"{option} ({where}): {e['msg']}")
    return "invalid settings: " + "; ".join(lines)


def run(args: argparse.Namespace) -> int:
    from dress.distributed import current_runtime
    from dress.pipeline import run_prune
    from dress.summary import prune_summary

    config = config_from_args(args)
    record = run_prune(config, args.out, overwrite=args.overwrite, resume=args.resume)
    if current_runtime(config.device).is_main:  # one summary per launch
        print(prune_summary(record, args.out))
    return 0
