"""The short, readable summary printed at the end of ``dress prune``."""

from __future__ import annotations

from pathlib import Path


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def _width_note(width: dict | None) -> str:
    """Effective ratio, and the zero-padded width `dress export` gives runtimes (dress.pruning.widths)."""
    if not width:
        return ""
    note = f"  (effective ratio {width['effective_ratio']:.3f}"
    if not width["aligned"]:
        note += f"; `dress export` pads to {width['runtime_width']} for llama.cpp"
    return note + ")"


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def prune_summary(record: dict, out: Path) -> str:
    p = record["parameters"]
    h = record.get("hidden_size")
    lines = [
        "",
        f"dress prune: {record['source_model']} -> {out}  (method {record['method']}, ratio {record['ratio']})",
        f"  parameters   {_fmt_params(p['before'])} -> {_fmt_params(p['after'])}  ({1 - p['after'] / p['before']:.1%} fewer)",
    ]
    if h:
        lines.append(f"  hidden width {h['before']} -> {h['after']}{_width_note(record.get('width'))}")
    if "layers" in record:
        layers = record["layers"]
        lines.append(f"  layers       {layers['before']} -> {layers['after']}  (removed {record.get('layers_removed')})")
    budget = record.get("parameter_budget")
    if budget:
        lines.append(f"  budget       keep {_fmt_params(budget['target_params'])} ({budget['share']:.0%} removed): "
                     f"{budget['knob']}, {budget['distance_share']:+.2%} of the model from it")
    lines += [f"  {line}" for line in record.get("method_summary", [])]  # the method's own lines
    if record.get("loader") == "dress":
        lines.append("  not a stock checkpoint: load it with dress.load(folder)")
    rep = record.get("report", {})
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
    size = record.get("size_on_disk")
    if size:
        est = " (estimated)" if size.get("input_estimated") else ""
        lines.append(f"  size on disk input {_size(size['input_bytes'])}{est} -> output "
                     f"{_size(size['output_bytes'])} ({size.get('output_dtype')})")
    if "preset" in record:
        diff = record.get("differs_from_preset") or {}
        shown = ", ".join(f"{k}={v}" for k, v in diff.items()) or "none"
        lines.append(f"  preset       {record['preset']}; differs from it: {shown}")
    for note in record.get("batch_adapted", []):
        lines.append(f"  batch        {note}")
    stages = record.get("stages", {})
    planned = record.get("memory_plan", {})
    if stages:
        lines.append("  stage                     seconds   peak memory   planned")
        for name, s in stages.items():
            plan = planned.get(name, {}).get("peak_gib")
            plan_text = f"{plan:>6.2f} GiB" if plan is not None else ""
            lines.append(f"    {name:<23} {s['seconds']:>7.1f}   {s.get('peak_memory_gib', float('nan')):>6.2f} GiB"
                         f"    {plan_text}")
    total = sum(s["seconds"] for s in stages.values())
    lines.append(f"  wall time    {total:.0f} s   record: {Path(out) / 'dress.json'}")
    return "\n".join(lines)
