"""``dress eval``: perplexity and zero-shot accuracy of one model (docs/evaluation.md).

Prints aligned tables, writes everything to ``--json FILE`` if asked, and, when MODEL is a folder
dress pruned (it has a ``dress.json``), appends the result to its ``"evaluations"``.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

from dress.errors import DressError

DTYPES = ("float32", "bfloat16", "float16")
PPL_BATCH_DEFAULT = 1
ZEROSHOT_BATCH_DEFAULT = 16


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="perplexity and zero-shot accuracy of a model",
        description=(
            "Evaluate MODEL by the paper's protocols: perplexity on non-overlapping windows of --seq-len "
            "tokens (each window scores seq_len-1 next-token predictions; the final partial window is "
            "dropped), and zero-shot accuracy through lm-eval (PIQA, WinoGrande, HellaSwag, ARC-e, ARC-c). "
            "Without --ppl or --zeroshot, evaluates perplexity on the bundled 'wiki' text."
        ),
    )
    p.add_argument("model", nargs="?", help="bundled name (default smollm2-135m), model folder, or hub id")
    p.add_argument(
        "--ppl", nargs="+", metavar="SOURCE",
        help="perplexity on these texts: bundled wiki, books; hub wikitext2, ptb, c4; or a local .txt/.jsonl",
    )
    p.add_argument("--seq-len", type=int, help="window length (default 2048, or the model's limit if smaller)")
    p.add_argument(
        "--batch-size", type=int,
        help=f"windows per forward pass for perplexity (default {PPL_BATCH_DEFAULT}); "
        f"requests per forward pass for lm-eval (default {ZEROSHOT_BATCH_DEFAULT})",
    )
    p.add_argument("--max-windows", type=int, help="score at most this many windows per text (quick runs; stated in the result)")
    p.add_argument("--zeroshot", action="store_true", help="zero-shot accuracy through lm-eval")
    p.add_argument("--tasks", help="comma-separated subset of piqa,winogrande,hellaswag,arc_easy,arc_challenge (default all)")
    p.add_argument("--limit", type=int, help="zero-shot: at most N items per task (the first N)")
    p.add_argument(
        "--tasks-source", choices=("auto", "bundled", "hub"), default="auto",
        help="standard lm-eval tasks from the hub, or the bundled offline copies (default auto: hub if reachable)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the result as JSON to FILE")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' dtype (default float32)")
    return p


def _validate(args) -> None:
    for name in ("seq_len", "batch_size", "max_windows", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DressError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def run(args) -> int:
    import torch

    from dress.environment import resolve_device
    from dress.evaluation.perplexity import perplexity, tokenize_once
    from dress.evaluation.zeroshot import parse_tasks, resolve_source, zeroshot
    from dress.io.loading import load_model
    from dress.io.record import append_to_record, write_json_atomic

    _validate(args)
    ppl_sources = args.ppl if args.ppl else ([] if args.zeroshot else ["wiki"])
    tasks = parse_tasks(args.tasks) if args.zeroshot else []
    # Everything that can fail fast (offline hub, missing files) does so before the model loads.
    texts = {}
    if ppl_sources:
        from dress.data import evaluation_text

        texts = {src: evaluation_text(src) for src in ppl_sources}
    tasks_source = resolve_source(args.tasks_source) if tasks else None

    device = str(resolve_device(args.device))
    started = time.time()
    loaded = load_model(args.model, dtype=getattr(torch, args.dtype), device=device)
    entry = {
        "command": "eval",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": loaded.source,
        "dtype": args.dtype,
        "device": device,
        "perplexity": [],
    }
    for src, text in texts.items():
        ids = tokenize_once(loaded.tokenizer, text)
        res = perplexity(
            loaded.model, ids, seq_len=args.seq_len, batch_size=args.batch_size or PPL_BATCH_DEFAULT,
            device=device, max_windows=args.max_windows,
        )
        entry["perplexity"].append({"source": src, **res.to_dict()})
    if tasks:
        zs = zeroshot(
            loaded.model, loaded.tokenizer, tasks, limit=args.limit,
            batch_size=args.batch_size or ZEROSHOT_BATCH_DEFAULT, source=tasks_source,
        )
        entry["zeroshot"] = zs.to_dict()
    entry["seconds"] = round(time.time() - started, 1)

    print(render(entry))
    if args.json:
        write_json_atomic(args.json, entry)
    if loaded.path is not None and append_to_record(loaded.path, "evaluations", entry):
        print(f"appended to {Path(loaded.path) / 'dress.json'} under \"evaluations\"")
    return 0


def render(entry: dict) -> str:
    """The screen report of one ``dress eval`` result."""
    from dress.reporting.tables import Column, format_table

    parts = [f"dress eval: {entry['model']}  ({entry['dtype']}, {entry['device']})"]
    if entry.get("perplexity"):
        parts += ["", "perplexity (non-overlapping windows; each scores seq_len-1 tokens; final partial window dropped)"]
        parts.append(format_table(entry["perplexity"], [
            Column("source"), Column("seq_len", "seq_len"), Column("n_windows", "windows"),
            Column("n_tokens_scored", "tokens scored", ",d"), Column("tokens_dropped", "dropped", ",d"),
            Column("nll_mean", "NLL", ".4f"), Column("ppl", "PPL", ".3f"),
        ]))
    zs = entry.get("zeroshot")
    if zs:
        limit = f"first {zs['limit']} items per task" if zs["limit"] else "all items"
        parts += ["", f"zero-shot, lm-eval {zs['lm_eval_version']}, {zs['source']} tasks, {limit}"]
        rows = [dict(t) for t in zs["tasks"]]
        rows.append({"task": "average", "acc": zs["avg_acc"], "acc_norm": zs["avg_acc_norm"]})
        parts.append(format_table(rows, [
            Column("task"), Column("n"), Column("acc", "acc", ".4f"), Column("acc_stderr", "±", ".4f"),
            Column("acc_norm", "acc_norm", ".4f"), Column("acc_norm_stderr", "±", ".4f"),
        ]))
        if zs["source"] == "bundled":
            parts.append("(bundled: validation splits; ARC's standard split is test. average acc_norm takes acc for WinoGrande)")
    parts.append(f"\n{entry['seconds']} s")
    return "\n".join(parts)
