"""Depth baselines: ``sleb`` and ``shortgpt`` remove whole decoder layers chosen by a score.

* **ShortGPT** (Men et al., 2024): Block Influence ``BI_i = 1 - mean_t cos(x_t, y_t)`` of each layer's
  input ``x`` and output ``y`` over the calibration tokens; the ``k`` lowest go. One forward.
* **SLEB** (Song et al., 2024): greedy; ``k`` times, remove the layer whose removal raises the
  calibration perplexity least. Each round scores every remaining layer by running the model with
  it skipped; the hidden state entering a layer is cached from one forward of the current model,
  so scoring layer ``j`` only runs the layers after ``j`` (and the head).

Both score on the calibration windows (the first ``depth.score_samples`` of them, regularization
part first), the same calibration draw every method gets. :func:`layer_count` and :func:`finish_layer_removal` are shared with TRSP.
"""

from __future__ import annotations

import math

import torch

from dress.adapters import adapter_for
from dress.errors import DressError
from dress.io.loading import resolve_model_path
from dress.io.record import read_record
from dress.logs import log
from dress.methods.base import MethodOutcome, PruneContext
from dress.methods.depth.memory import REMOVE, SCORE
from dress.pruning.gates import record_residual_updates, skipped_layers
from dress.pruning.layers import layers_for_ratio, remove_layers, removal_note
from dress.resume import recall


def layer_count(ctx: PruneContext) -> tuple[int, str]:
    """Layers to remove (``depth.layers`` or from ``ratio``) and the note saying what that means."""
    model, depth = ctx.model, ctx.config.depth
    n_layers = len(adapter_for(model).decoder_layers(model))
    if depth.layers is not None:
        if depth.layers >= n_layers:
            raise DressError(f"--layers {depth.layers}: the model has {n_layers} layers; keep at least one")
        k, how = depth.layers, " (from --layers; --ratio ignored)"
    else:
        k, how = layers_for_ratio(model, ctx.config.ratio), f" (closest to --ratio {ctx.config.ratio})"
    note = removal_note(model, k) + how
    log.info(f"{note}")
    return k, note


def scoring_windows(ctx: PruneContext) -> torch.Tensor:
    """Calibration windows ``[n, seq]`` used to score layers."""
    windows = ctx.scoring_windows()
    if windows is None:
        raise DressError("scoring layers needs calibration samples; raise --samples")
    limit = ctx.config.depth.score_samples
    return windows if limit is None else windows[:limit]


def _batches(windows: torch.Tensor, batch_size: int, device: torch.device):
    for start in range(0, windows.shape[0], batch_size):
        yield windows[start : start + batch_size].to(device)


@torch.no_grad()
def block_influence(model, windows: torch.Tensor, batch_size: int, device: torch.device) -> list[float]:
    """ShortGPT's ``1 - mean cos(x, y)`` per decoder layer, averaged over every token."""
    n_layers = len(adapter_for(model).decoder_layers(model))
    cos_sum = [0.0] * n_layers
    tokens = 0

    def accumulate(i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        # x, y: [batch, seq, d] -> cos per token [batch, seq]
        cos_sum[i] += float(torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1).sum())

    with record_residual_updates(model, range(n_layers), accumulate):
        for ids in _batches(windows, batch_size, device):
            model(input_ids=ids, use_cache=False)
            tokens += ids.numel()
    return [1.0 - c / tokens for c in cos_sum]


@torch.no_grad()
def sleb_order(model, windows: torch.Tensor, k: int, batch_size: int, device: torch.device):
    """Greedy SLEB: returns ``(removed, rounds)``; ``removed`` in the order chosen, ``rounds[r]``
    maps each candidate layer to the calibration perplexity without it (given earlier removals)."""
    n_layers = len(adapter_for(model).decoder_layers(model))
    removed: list[int] = []
    rounds: list[dict[int, float]] = []
    for r in range(k):
        candidates = [j for j in range(n_layers) if j not in removed]
        nll = dict.fromkeys(candidates, 0.0)
        count = 0
        for ids in _batches(windows, batch_size, device):
            entering: dict[int, torch.Tensor] = {}  # layer -> its input [batch, seq, d]

            def keep_input(i, x, _y, entering=entering):
                entering[i] = x

            with skipped_layers(model, removed), record_residual_updates(model, candidates, keep_input):
                model(input_ids=ids, use_cache=False)
            for j in candidates:
                with skipped_layers(model, removed + [j], resume_from=(j, entering[j])):
                    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                nll[j] += float(loss) * ids.shape[0]
            count += ids.shape[0]
        ppl = {j: math.exp(v / count) for j, v in nll.items()}
        best = min(candidates, key=lambda j: (ppl[j], j))
        removed.append(best)
        rounds.append(ppl)
        log.info(f"SLEB round {r + 1}/{k}: remove layer {best} (calibration PPL {ppl[best]:.2f})")
    return removed, rounds


def finish_layer_removal(ctx: PruneContext, chosen: list[int], note: str, report: dict) -> MethodOutcome:
    """Measure the prune gap around removing ``chosen``, remove them, and build the record."""
    model = ctx.model
    result = ctx.remove_measuring_gap(REMOVE, lambda: remove_layers(model, chosen), report)
    record = {
        "layers": {"before": result.layers_before, "after": result.layers_after},
        "layers_removed": result.removed,
        "layer_removal": note,
        **_width_pruned_source(ctx),
    }
    return MethodOutcome(model, report, record)


def _width_pruned_source(ctx: PruneContext) -> dict:
    """OPT/Phi whose hidden width dress already reduced stay ``loader: dress``: carry the removed
    channels over from the source's record so ``dress.load`` can replay them."""
    model = ctx.model
    adapter = adapter_for(model)
    if adapter.stock_after_prune or adapter.hidden_size(model) == model.config.hidden_size:
        return {}
    _, path = resolve_model_path(ctx.config.model)
    source = read_record(path) if path is not None else None
    if not source or not source.get("hidden_channels_removed"):
        raise DressError("this model's hidden width was reduced, but its dress.json (the removed channels) is missing")
    return {"loader": "dress", "hidden_channels_removed": source["hidden_channels_removed"]}


def shortgpt(ctx: PruneContext) -> MethodOutcome:
    k, note = layer_count(ctx)
    windows = scoring_windows(ctx)
    with ctx.clock.stage(SCORE["shortgpt"]):
        scores = recall("layer_scores", {"method": "shortgpt", "depth": ctx.config.depth.model_dump()},
                        lambda: block_influence(ctx.model, windows, ctx.config.depth.batch_size, ctx.device))
    chosen = sorted(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:k])
    log.info(f"ShortGPT removes layers {chosen}")
    report = {"block_influence": scores, "scoring_tokens": int(windows.numel())}
    return finish_layer_removal(ctx, chosen, note, report)


def sleb(ctx: PruneContext) -> MethodOutcome:
    k, note = layer_count(ctx)
    windows = scoring_windows(ctx)
    with ctx.clock.stage(SCORE["sleb"]):
        order, rounds = recall(
            "layer_scores", {"method": "sleb", "layers": k, "depth": ctx.config.depth.model_dump()},
            lambda: sleb_order(ctx.model, windows, k, ctx.config.depth.batch_size, ctx.device),
        )
    report = {
        "sleb_order": order,
        "sleb_rounds": [{str(j): p for j, p in r.items()} for r in rounds],
        "scoring_tokens": int(windows.numel()),
    }
    return finish_layer_removal(ctx, sorted(order), note, report)
