"""The short, readable summary printed at the end of ``dress prune``."""

from __future__ import annotations

from pathlib import Path


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def prune_summary(record: dict, out: Path) -> str:
    p = record["parameters"]
    h = record.get("hidden_size")
    lines = [
        "",
        f"dress prune: {record['source_model']} -> {out}  (method {record['method']}, ratio {record['ratio']})",
        f"  parameters   {_fmt_params(p['before'])} -> {_fmt_params(p['after'])}  ({1 - p['after'] / p['before']:.1%} fewer)",
    ]
    if h:
        lines.append(f"  hidden width {h['before']} -> {h['after']}")
    if "layers" in record:
        layers = record["layers"]
        lines.append(f"  layers       {layers['before']} -> {layers['after']}  (removed {record.get('layers_removed')})")
    counts = record.get("llm_surgeon_counts")
    if counts:
        lines.append(
            f"  zeroed       {counts['nominal_zero_fraction']:.1%} of decoder linear entries "
            f"({_fmt_params(counts['zeroed_entries'])}; the paper's count); physically removed "
            f"{_fmt_params(counts['params_removed'])} ({counts['params_removed_fraction']:.1%}), "
            f"{_fmt_params(counts['zeros_kept_in_place'])} zeros kept in place")
    if record.get("loader") == "dress":
        lines.append("  not a stock checkpoint: load it with dress.load(folder)")
    rep = record.get("report", {})
    if "regularization" in rep:
        lines.append(f"  preserved ratio of removed groups {rep['regularization']['preserved_ratio']:.4f}")
    if "prune_gap_nats" in rep:
        lines.append(f"  prune gap    {rep['prune_gap_nats']:+.4f} nats")
    held = record.get("evaluation", {}).get("held_out", {})
    if "dense" in held and "pruned" in held:
        d, q = held["dense"], held["pruned"]
        lines.append(
            f"  perplexity   dense {d['ppl']:.2f} -> pruned {q['ppl']:.2f}  ({q['ppl'] / d['ppl']:.2f}x; "
            f"{record['evaluation']['source']} held-out, {d['n_tokens_scored']} tokens, context {d['seq_len']}; "
            f"perplexities at other contexts, e.g. dress eval's default 2048, do not compare)"
        )
    stages = record.get("stages", {})
    if stages:
        lines.append("  stage                     seconds   peak memory")
        for name, s in stages.items():
            lines.append(f"    {name:<23} {s['seconds']:>7.1f}   {s.get('peak_memory_gib', float('nan')):>6.2f} GiB")
    total = sum(s["seconds"] for s in stages.values())
    lines.append(f"  wall time    {total:.0f} s   record: {Path(out) / 'dress.json'}")
    return "\n".join(lines)
