"""Tables and figures of a comparison (:mod:`dress.comparison`), written from ``results.json`` alone.

* ``results.md``: the paper's Table 1 shape — Method | Ratio | Params | PPL | per-task accuracy |
  Avg — with the dense row first, plus the sweep fields, the prune gap and DReSS's preserved ratio
  when present, speedups when measured, and the evaluation protocol underneath.
* ``ppl_vs_ratio.png``: perplexity against pruning ratio, one line per variant (Figure 4).
* ``heatmap_<entry>.png``: for every DReSS/FPR entry, the preserved ratio (Σ|w| after ÷ before
  regularization) per layer and matrix (Figure 3).

Everything here is a pure function of the results dict, so figures can be redrawn without rerunning.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from dress.io.record import replace_atomically, slug

TASK_NAMES = {"piqa": "PIQA", "winogrande": "WinoGrande", "hellaswag": "HellaSwag", "arc_easy": "ARC-e",
              "arc_challenge": "ARC-c"}
_LAYER_TENSOR = re.compile(r"layers\.(\d+)\.(.+)\.(weight|bias)$")


def write_outputs(results: dict, out: Path) -> list[Path]:
    """Write ``results.md`` and the PNG figures into ``out``; returns the paths written."""
    out = Path(out)
    table = markdown_table(results) + "\n"
    replace_atomically(out / "results.md", lambda tmp: tmp.write_text(table))
    written = [out / "results.md"]
    entries = ordered_entries(results)
    if entries:
        written.append(plot_ppl_vs_ratio(results, out / "ppl_vs_ratio.png"))
    for entry in entries:
        by_tensor = entry.get("record", {}).get("report", {}).get("regularization", {}).get("preserved_by_tensor")
        if by_tensor:
            written.append(plot_preserved_heatmap(by_tensor, out / f"heatmap_{slug(entry['key'])}.png", entry["key"]))
    return written


def ordered_entries(results: dict) -> list[dict]:
    entries = results.get("entries", {})
    order = [k for k in results.get("order", []) if k in entries]
    order += [k for k in entries if k not in order]
    return [entries[k] for k in order]


# ---- table ---------------------------------------------------------------------------------
def _fmt(value, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _fmt_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}M"


def _tasks(results: dict) -> list[str]:
    tasks: list[str] = []
    rows = [results.get("dense", {})] + ordered_entries(results)
    for row in rows:
        for t in (row.get("zeroshot") or {}).get("tasks", []):
            if t["task"] not in tasks:
                tasks.append(t["task"])
    return tasks


def _accuracies(row: dict, tasks: list[str]) -> list[str]:
    zs = row.get("zeroshot")
    if not zs:
        return ["-"] * (len(tasks) + 1)
    by_task = {t["task"]: t for t in zs["tasks"]}
    cells = [_with_stderr(by_task[t]["acc"], by_task[t].get("acc_stderr")) if t in by_task else "-" for t in tasks]
    errors = [by_task[t].get("acc_stderr") for t in tasks if t in by_task]
    mean_error = (sum(e * e for e in errors) ** 0.5 / len(errors)) if errors and None not in errors else None
    return cells + [_with_stderr(zs["avg_acc"], mean_error)]


def _with_stderr(acc: float, stderr: float | None) -> str:
    """``"45.3 ±2.9"`` (percent; the standard error lm-eval reports, so a reader sees what separates rows)."""
    return _fmt(100 * acc) + (f" ±{100 * stderr:.1f}" if stderr is not None else "")


def markdown_table(results: dict) -> str:
    """The comparison as a markdown table (see the module docstring)."""
    entries = ordered_entries(results)
    dense = results.get("dense", {})
    tasks = _tasks(results)
    sweep_fields = list(results.get("spec", {}).get("sweep", {}))
    has_gap = any(e.get("prune_gap_nats") is not None for e in entries)
    has_preserved = any(e.get("preserved_ratio") is not None for e in entries)
    has_speed = any(e.get("speed") for e in entries)

    has_budget = any(_budget(e) for e in entries)
    header = ["Method", "Ratio", *sweep_fields, "Params", *(["vs budget"] if has_budget else []), "PPL"]
    if has_gap:
        header.append("Prune gap (nats)")
    if has_preserved:
        header.append("Preserved")
    header += [TASK_NAMES.get(t, t) for t in tasks]
    if tasks:
        header.append("Avg")
    if has_speed:
        header += ["Prefill speedup", "Generation speedup"]

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [row(header), row(["---"] * len(header))]
    dense_cells = ["Dense", "0%", *["-"] * len(sweep_fields), _fmt_params(dense.get("params")),
                   *(["-"] if has_budget else []), _fmt(dense.get("ppl"))]
    dense_cells += ["-"] * (int(has_gap) + int(has_preserved))
    if tasks:
        dense_cells += _accuracies(dense, tasks)
    if has_speed:
        dense_cells += ["1.00x", "1.00x"]
    lines.append(row(dense_cells))
    for e in entries:
        lead = [e["label"], f"{100 * e['ratio']:g}%", *[str(e.get("sweep", {}).get(f, "-")) for f in sweep_fields]]
        if e.get("not_applicable"):
            cells = lead + ["n/a", "n/a"]
            lines.append(row(cells + ["-"] * (len(header) - len(cells))))
            continue
        budget = _budget(e)
        cells = lead + [_fmt_params(e.get("params")), *([_budget_cell(budget)] if has_budget else []), _fmt(e.get("ppl"))]
        if has_gap:
            cells.append(_fmt(e.get("prune_gap_nats"), "+.3f"))
        if has_preserved:
            cells.append(_fmt(e.get("preserved_ratio"), ".4f"))
        if tasks:
            cells += _accuracies(e, tasks)
        if has_speed:
            ratios = (e.get("speed") or {}).get("ratios", {})
            cells += [_fmt(ratios.get("prefill_speedup"), ".2f") + "x", _fmt(ratios.get("generation_speedup"), ".2f") + "x"]
        lines.append(row(cells))
    lines.append("")
    ran = [e for e in entries if not e.get("not_applicable")]
    reasons = sorted({e["not_applicable"] for e in entries if e.get("not_applicable")})
    lines += [f"n/a: {reason}." for reason in reasons] + ([""] if reasons else [])
    lines.append(_protocol(results, ran))
    across = draws_table(ran)
    if across:
        lines += ["", across]
    return "\n".join(lines)


def _budget(entry: dict) -> dict | None:
    """The entry's parameter budget (``--ratio-of params``), if it ran under one."""
    return (entry.get("record") or {}).get("parameter_budget")


def _budget_cell(budget: dict | None) -> str:
    """Distance of the planned kept count from the budget, as a share of the dense model, and the knob."""
    if not budget:
        return "-"
    return f"{100 * budget['distance_share']:+.2f}% ({budget['knob']})"


def _without_draw(entry: dict) -> str:
    """The entry's resolved config with its calibration draw (``seed``, ``data.seed``) left out."""
    import json

    config = json.loads(json.dumps(entry["record"]["config"], default=str))
    config.pop("seed", None)
    config.get("data", {}).pop("seed", None)
    return json.dumps(config, sort_keys=True)


def draws_table(entries: list[dict]) -> str:
    """Rows that differ only in the calibration draw, as one line each: perplexity per draw, mean and
    spread (max - min). Empty when no setting ran on more than one draw."""
    groups: dict[str, list[dict]] = {}
    for e in entries:
        if e.get("record", {}).get("config"):
            groups.setdefault(_without_draw(e), []).append(e)
    if all(len(g) < 2 for g in groups.values()):
        return ""
    lines = ["Across calibration draws (rows whose settings differ only in the seed of the draw):", "",
             "| Method | Ratio | Params | PPL per draw (seed: PPL) | Mean PPL | Spread |", "| --- | --- | --- | --- | --- | --- |"]
    for group in groups.values():
        ppls = [e["ppl"] for e in group if e.get("ppl") is not None]
        per_draw = ", ".join(f"{e['record']['config']['data']['seed']}: {_fmt(e.get('ppl'))}" for e in group)
        mean = sum(ppls) / len(ppls) if ppls else None
        spread = max(ppls) - min(ppls) if len(ppls) > 1 else None
        params = sorted({_fmt_params(e.get("params")) for e in group})
        lines.append(f"| {group[0]['label']} | {100 * group[0]['ratio']:g}% | {' / '.join(params)} | {per_draw} | "
                     f"{_fmt(mean)} | {_fmt(spread)} |")
    return "\n".join(lines)


def _protocol(results: dict, entries: list[dict]) -> str:
    dense = results.get("dense", {})
    ev = dense.get("eval") or {}
    parts = []
    if ev:
        source = entries[0]["record"]["evaluation"].get("source") if entries else None
        parts.append(f"PPL: held-out {source or 'text'}, context {ev.get('seq_len')}, {ev.get('n_tokens_scored')} "
                     f"tokens scored ({ev.get('n_windows')} windows), same for every row.")
    if entries:
        parts.append(_calibration_sentence(entries))
    if results.get("spec", {}).get("zeroshot", {}).get("enabled"):
        zs = results["spec"]["zeroshot"]
        which = "" if not zs.get("labels") else f" for {', '.join(zs['labels'])} (other rows: '-')"
        parts.append(f"Zero-shot: lm-eval accuracy (acc, %), limit {zs.get('limit')} items per task{which}.")
    parts.append("Params include every added matrix (SliceGPT's shortcuts).")
    return " ".join(parts)


def _calibration_sentence(entries: list[dict]) -> str:
    """Names every calibration draw the rows used; one sentence claims sharing only when it is true."""
    draws = []
    for e in entries:
        data = e["record"]["config"]["data"]
        draw = f"{data['samples']} x {data['seq_len']} tokens from {data['calib']!r} (seed {data['seed']})"
        if draw not in draws:
            draws.append(draw)
    if len(draws) == 1:
        return f"Calibration: {draws[0]}, one draw shared by all methods."
    return (f"Calibration: {len(draws)} draws, " + "; ".join(draws)
            + "; rows with the same data settings share one draw.")


# ---- figures -------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ppl_vs_ratio(results: dict, path: Path) -> Path:
    """Perplexity (log scale) against pruning ratio, one line per variant and sweep point."""
    plt = _pyplot()
    series: dict[str, list[tuple[float, float]]] = {}
    for e in ordered_entries(results):
        if e.get("ppl") is None:
            continue
        name = e["label"] + ("".join(f" {k}={v}" for k, v in e.get("sweep", {}).items()))
        series.setdefault(name, []).append((100 * e["ratio"], e["ppl"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    dense_ppl = results.get("dense", {}).get("ppl")
    if dense_ppl is not None:
        ax.axhline(dense_ppl, color="black", linestyle="--", linewidth=1, label=f"dense ({dense_ppl:.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("pruning ratio (%)")
    ax.set_ylabel("held-out perplexity (log)")
    ax.set_title("Perplexity vs pruning ratio")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    replace_atomically(path, fig.savefig)
    plt.close(fig)
    return path


def preserved_grid(by_tensor: dict[str, float]) -> tuple[list[int], list[str], list[list[float]]]:
    """``(layers, matrices, values[layer][matrix])`` from ``preserved_by_tensor`` (NaN = absent);
    matrices are named by their module (``q_proj``, ..., ``input_layernorm``), ``.bias`` appended
    for bias vectors. Tensors outside the decoder layers (embeddings, head, final norm) are skipped."""
    cells: dict[tuple[int, str], float] = {}
    matrices: list[str] = []
    for name, value in by_tensor.items():
        match = _LAYER_TENSOR.search(name)
        if not match:
            continue
        layer, module, kind = int(match.group(1)), match.group(2).rsplit(".", 1)[-1], match.group(3)
        column = module if kind == "weight" else f"{module}.bias"
        if column not in matrices:
            matrices.append(column)
        cells[(layer, column)] = value
    layers = sorted({layer for layer, _ in cells})
    grid = [[cells.get((layer, m), float("nan")) for m in matrices] for layer in layers]
    return layers, matrices, grid


def plot_preserved_heatmap(by_tensor: dict[str, float], path: Path, title: str = "") -> Path:
    """Preserved ratio per layer (rows) and matrix (columns), 0 (white) .. 1 (dark)."""
    plt = _pyplot()
    layers, matrices, grid = preserved_grid(by_tensor)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(matrices), 1.2 + 0.22 * len(layers)), dpi=120)
    image = ax.imshow(grid, aspect="auto", cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(matrices)), matrices, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
    ax.set_ylabel("layer")
    ax.set_title(f"Preserved ratio after regularization {title}".strip() + "\n" + preserved_caption(by_tensor),
                 fontsize=8)
    fig.colorbar(image, ax=ax, label="Σ|w| after ÷ before")
    fig.tight_layout()
    replace_atomically(path, fig.savefig)
    plt.close(fig)
    return path


def preserved_caption(by_tensor: dict[str, float]) -> str:
    """One line naming what a uniform colour hides: the largest per-layer cell and the tensors outside
    the layers (embeddings, head, final norm), e.g. ``largest 0.0031 (layer 7 down_proj); embed_tokens 0.0000``."""
    layers, matrices, grid = preserved_grid(by_tensor)
    cells = [(v, layer, m) for layer, row in zip(layers, grid) for m, v in zip(matrices, row) if v == v]
    parts = []
    if cells:
        value, layer, matrix = max(cells)
        parts.append(f"largest {value:.4f} (layer {layer} {matrix})")
    parts += [f"{name.removeprefix('model.').removesuffix('.weight')} {value:.4f}"
              for name, value in by_tensor.items() if not _LAYER_TENSOR.search(name)]
    return "; ".join(parts)
