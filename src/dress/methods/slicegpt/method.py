"""SliceGPT (Ashkboos et al., 2024) as a dress method: fold norms, rotate the residual stream by the
PCA of its activations, slice the least-energy directions.

Algorithm (the sequential variant: each basis is computed on the stream of the already sliced
model, so later bases see earlier slicing errors):

1. :func:`dress.methods.slicegpt.rotate.fold_norms`: every residual norm becomes a gain-free
   :class:`~dress.methods.slicegpt.rotate.StreamNorm`; gains and LayerNorm biases move into the readers.
2. Basis ``B_0`` = eigenvectors of ``X^T X`` of the layer-0 input on the calibration windows
   (``ctx.reg_part``). Embeddings are rotated and sliced to ``k`` (the same width the width methods
   keep, :func:`dress.pruning.hidden.pruned_width`).
3. For each sub-block (a norm and what it feeds: attention, then MLP; one per layer for Phi's
   parallel block), in order: its readers are rotated into the current basis ``B_j``; the layer runs
   on the calibration stream until the sub-block's writers have produced their (unrotated) outputs;
   the signal that will reach the next norm is, in original coordinates,
   ``z = r @ B_j[:, :k].T + sum(writer outputs)`` (``r`` the residual the writers are added to);
   ``B_{j+1}`` = eigenvectors of ``sum z^T z``; the writers are rotated into ``B_{j+1}`` and sliced,
   and the norm gets the residual shortcut ``S_j = B_j[:, :k].T @ B_{j+1}[:, :k]``.
4. The head reads in the last basis (tied heads: the final norm's ``head_map``).

Parameters added: one ``k x k`` shortcut per sub-block (two per layer for Llama/OPT, one for Phi)
and, for a tied head, one ``k x k`` head map; they are ordinary parameters, so every parameter
count includes them. The result loads with ``dress.load`` (``"loader": "dress"``; :func:`rebuild`
replays the structure recorded under ``"rebuild"`` in ``dress.json``).

Not supported: Gemma3 (its post-attention and post-feedforward norms act on sub-block outputs
before the residual add, so a rotation of the stream does not commute with them).
Calibration forwards use ``config.evaluate.batch_size`` windows at a time (memory only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dress.adapters import Adapter, adapter_for
from dress.adapters.base import norm_has_bias
from dress.errors import DressError
from dress.logs import log
from dress.methods.base import MethodOutcome, PruneContext
from dress.methods.slicegpt.counts import slicing_adds
from dress.methods.slicegpt.memory import SLICE
from dress.pruning.budget import Shape, width_shapes
from dress.pruning.hidden import remove_hidden_channels, width_choice
from dress.methods.slicegpt.rotate import (
    StreamNorm,
    add_zero_bias,
    fold_norms,
    principal_basis,
    rotate_embedding,
    rotate_reader,
    rotate_writer,
    set_linear,
    set_module,
    sub_blocks,
)
from dress.methods import get

REBUILD = "slicegpt"  # the registry key dress.json names (MethodSpec.rebuild)


class _Stop(Exception):
    """Raised from a hook to end a forward once the wanted activations are captured."""


def unsupported_reason(model: nn.Module) -> str | None:
    """Why SliceGPT cannot prune ``model`` exactly (``None``: it can). The registry's support check."""
    adapter = adapter_for(model)
    if adapter.norm_kind == "rms_one_plus" or len(adapter.layer_norms) > 2:
        return ("its post-attention and post-feedforward norms act on each sub-block's output before the "
                "residual add, so rotating the residual stream is not invariant")
    return None


def check_supported(model: nn.Module) -> None:
    """Raise the registry's refusal (:meth:`dress.methods.MethodSpec.refusal`, the one sentence that
    ``dress prune`` and ``dress compare`` also show) when SliceGPT cannot prune ``model``."""
    refusal = get("slicegpt").refusal(model)
    if refusal:
        raise DressError(f"--method {refusal}. Use a width method (dress, direct) or a depth method.")


def slicegpt(ctx: PruneContext) -> MethodOutcome:
    model, config = ctx.model, ctx.config
    adapter = adapter_for(model)
    check_supported(model)
    if ctx.reg_part is None or ctx.reg_part.shape[0] == 0:
        raise DressError("--method slicegpt needs calibration windows (its regularization part is empty; check --split)")
    choice = width_choice(model.config, config.ratio, adapter, config.width_multiple)
    k = choice.width
    if choice.note:
        log.info(choice.note)
    report: dict = {}
    result = ctx.remove_measuring_gap(
        SLICE,
        lambda: slice_model(model, ctx.reg_part, k, batch_size=config.evaluate.batch_size, bf16=ctx.bf16), report)
    energy = result.energy
    report["slicegpt"] = {"energy_kept": energy, "calibration_windows": int(ctx.reg_part.shape[0])}
    log.info(f"SliceGPT kept {min(energy):.4f}..{max(energy):.4f} of the stream's energy per basis")
    return MethodOutcome(model, report, {**result.record, "width": choice.as_record()})


@dataclass
class SliceResult:
    energy: list[float]  # fraction of the stream's energy kept by each basis, B_0 first
    record: dict  # structural facts for dress.json: loader, hidden_size, rebuild


def slice_model(model: nn.Module, windows: torch.Tensor, k: int, *, batch_size: int = 4, bf16: bool = False) -> SliceResult:
    """SliceGPT on ``model`` in place: fold norms, rotate by the PCA on ``windows`` ``[n, seq]``,
    slice to width ``k`` (``k = d``: rotation only, logits unchanged). The returned record, saved
    in ``dress.json``, lets :func:`dress.load` rebuild the model."""
    adapter = adapter_for(model)
    check_supported(model)
    d = adapter.hidden_size(model)
    if not 0 < k <= d:
        raise DressError(f"SliceGPT width must be between 1 and {d}, got {k}")
    folded = fold_norms(model, adapter)
    energy = rotate_and_slice(model, adapter, windows, k, batch_size, bf16)
    finalize_config(model, adapter, k)
    record = {
        "loader": "dress",
        "hidden_size": {"before": d, "after": k},
        "rebuild": {"method": REBUILD, "args": rebuild_args(model, adapter, folded, d, k)},
    }
    return SliceResult(energy, record)


# ---- the sequential rotation ---------------------------------------------------------------
STREAM_DEVICE = torch.device("cpu")  # where the cached calibration stream lives between uses

@torch.no_grad()
def rotate_and_slice(
    model: nn.Module, adapter: Adapter, windows: torch.Tensor, k: int, batch_size: int = 4, bf16: bool = False
) -> list[float]:
    """Rotate a folded model (see :func:`dress.methods.slicegpt.rotate.fold_norms`) by the per-sub-block PCA
    of its stream on ``windows`` ``[n, seq]`` and slice it to width ``k`` (``k = d``: rotation only).
    Returns the fraction of the stream's energy kept by each basis (``B_0`` first)."""
    device = next(model.parameters()).device
    layers = adapter.decoder_layers(model)
    blocks = sub_blocks(adapter)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with autocast:
        inputs, layer_kwargs = _layer_inputs(model, layers, windows, batch_size, device)
    # inputs: list of [b, seq, d] float32 chunks, original coordinates, kept in host memory (STREAM_DEVICE):
    # at paper scale one copy of the stream is 34 GB (1000 x 2048 x 4096 fp32); each chunk visits the
    # device only while it is used.
    values, basis = principal_basis(_second_moment(inputs, device))
    energy = [_kept(values, k)]
    first_basis = basis
    like = adapter.decoder_layers(model)[0].get_submodule(blocks[0].writers[0]).weight  # dtype/device
    bk = basis[:, :k].to(device)
    for _, embedding in adapter.named_embeddings(model):
        rotate_embedding(embedding, bk)
    stream = [(x.to(device).double() @ bk).float().to(STREAM_DEVICE) for x in inputs]  # [b, seq, k]
    del inputs

    for i, layer in enumerate(layers):
        for block in blocks:
            for name in block.readers:
                rotate_reader(layer.get_submodule(name), bk)
            with autocast:
                signals = [
                    _sub_block_signal(layer, block, x.to(device), bk, layer_kwargs[x.shape[0]][i]).to(STREAM_DEVICE)
                    for x in stream
                ]  # [b, seq, d] each, original coordinates
            values, basis = principal_basis(_second_moment(signals, device))
            energy.append(_kept(values, k))
            new_bk = basis[:, :k].to(device)
            for name in block.writers:
                rotate_writer(layer.get_submodule(name), new_bk)
            norm = layer.get_submodule(block.norm)
            _give_shortcut(norm, bk.T.double() @ new_bk.double(), like)  # [k, k]
            norm.pair_with(layer.get_submodule(block.writers[0]))
            bk = new_bk
            if block is blocks[-1]:
                stream = [(z.to(device).double() @ bk).float().to(STREAM_DEVICE) for z in signals]  # next input [b, seq, k]
            del signals

    _rotate_head(model, adapter, bk, first_basis[:, :k].to(device))
    return energy


def _layer_inputs(model, layers, windows, batch_size, device):
    """Layer-0 inputs of every chunk of ``windows`` (float32 ``[b, seq, d]``) and, per chunk batch
    size, the keyword arguments each layer receives (masks, position embeddings): they depend on
    the shape only, so a layer can later run alone on a cached stream."""
    inputs: list[torch.Tensor] = []
    kwargs_by_size: dict[int, list[dict]] = {}
    current: list[dict] = []
    need_all = [False]

    def grab(index):
        def hook(_module, args, kwargs):
            if index == 0:
                x = args[0] if args else kwargs["hidden_states"]
                inputs.append(x.detach().float().to(STREAM_DEVICE))
            if need_all[0]:
                rest = {key: value for key, value in kwargs.items() if key != "hidden_states"}
                if len(args) > 1:
                    raise DressError("decoder layers take extra positional arguments; SliceGPT cannot replay them")
                current.append(rest)
            if not need_all[0] or index == len(layers) - 1:
                raise _Stop

        return hook

    handles = [layer.register_forward_pre_hook(grab(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for start in range(0, windows.shape[0], batch_size):
            chunk = windows[start : start + batch_size].to(device)
            need_all[0] = chunk.shape[0] not in kwargs_by_size
            current = []
            try:
                model(input_ids=chunk, use_cache=False)
            except _Stop:
                pass
            if need_all[0]:
                kwargs_by_size[chunk.shape[0]] = list(current)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, kwargs_by_size


def _sub_block_signal(layer, block, x, bk, kwargs) -> torch.Tensor:
    """Run ``layer`` on its input ``x`` ``[b, seq, k]`` until ``block``'s writers have run; return
    the signal reaching the next norm in original coordinates, ``r @ bk.T + sum(writer outputs)``
    ``[b, seq, d]`` (float32), ``r`` being the residual at ``block.norm``'s input."""
    captured: dict[str, torch.Tensor] = {}
    writers = [layer.get_submodule(name) for name in block.writers]
    norm = layer.get_submodule(block.norm)

    def on_norm(_module, args):
        captured["residual"] = args[0].detach()

    def on_writer(name):
        def hook(_module, _args, output):
            captured[name] = output.detach()
            if all(w in captured for w in block.writers):
                raise _Stop

        return hook

    handles = [norm.register_forward_pre_hook(on_norm)]
    handles += [w.register_forward_hook(on_writer(n)) for n, w in zip(block.writers, writers)]
    try:
        layer(x, **kwargs)
        raise DressError(f"the layer finished without running {block.writers}; cannot compute SliceGPT's basis")
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
        for module in layer.modules():
            if isinstance(module, StreamNorm):
                module.clear()
    residual = captured["residual"].double()  # [b, seq, k] (OPT's MLP sees [b*seq, k])
    z = residual @ bk.T.double()
    for name in block.writers:
        z = z + captured[name].double()
    return z.reshape(*x.shape[:-1], -1).float()


def _second_moment(chunks: Sequence[torch.Tensor], device: torch.device | None = None) -> torch.Tensor:
    d = chunks[0].shape[-1]
    device = device or chunks[0].device
    h = torch.zeros(d, d, dtype=torch.float64, device=device)
    for x in chunks:
        flat = x.to(device).reshape(-1, d).double()
        h += flat.T @ flat
    return h


def _kept(values: torch.Tensor, k: int) -> float:
    values = values.clamp(min=0)
    return float(values[:k].sum() / values.sum().clamp(min=1e-30))


def _give_shortcut(norm: StreamNorm, matrix: torch.Tensor, like: torch.Tensor) -> None:
    """Set ``norm``'s residual shortcut to ``matrix`` ``[k, k]`` (dtype and device of ``like``)."""
    norm.width = matrix.shape[0]
    norm.shortcut = nn.Linear(norm.width, norm.width, bias=False).to(device=like.device, dtype=like.dtype)
    set_linear(norm.shortcut, matrix)


def _rotate_head(model, adapter, bk_last, bk_first) -> None:
    final = model.get_submodule(adapter.final_norm)
    final.width = bk_last.shape[1]
    head = model.get_submodule(adapter.lm_head)
    if final.head_map is None:
        rotate_reader(head, bk_last)
        return
    # Tied: logits = y @ A @ E.T with y, A in original coordinates; E' = E @ B0k is the shared table.
    a = final.head_map.weight.detach().double().T  # [d, d] (y @ A)
    dtype = final.head_map.weight.dtype
    set_linear(final.head_map, bk_last.double().T @ a @ bk_first.double())  # [k, k]
    final.head_map.to(dtype)
    head.weight = model.get_submodule(adapter.embeddings[0]).weight
    head.in_features = bk_first.shape[1]


def finalize_config(model: nn.Module, adapter: Adapter, k: int) -> None:
    """Stock-width families get ``hidden_size = k`` (attention width is explicit via ``head_dim``);
    OPT/Phi keep their config (attention width derives from it) and rebuild from the record."""
    config = model.config
    if adapter.stock_after_prune:
        config.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        config.hidden_size = k


# ---- loading -------------------------------------------------------------------------------
def rebuild_args(model: nn.Module, adapter: Adapter, folded, d: int, k: int) -> dict:
    """What :func:`rebuild` needs to give a fresh model the structure of this one."""
    norms = {}
    for name, eps in folded.eps.items():
        norm = model.get_submodule(name)
        norms[name] = {"eps": eps, "shortcut": norm.shortcut is not None, "head_map": norm.head_map is not None}
    writers = {}
    for i, _ in enumerate(adapter.decoder_layers(model)):
        for block in sub_blocks(adapter):
            writers[f"{adapter.layers}.{i}.{block.norm}"] = f"{adapter.layers}.{i}.{block.writers[0]}"
    return {
        "full_width": d,
        "width": k,
        "norms": norms,
        "paired_writers": writers,
        "added_biases": list(folded.added_biases),
    }


@torch.no_grad()
def rebuild(model: nn.Module, args: dict) -> None:
    """Give a model built from the saved config the structure recorded by :func:`rebuild_args`
    (weights are loaded afterwards, strictly)."""
    adapter = adapter_for(model)
    d, k = int(args["full_width"]), int(args["width"])
    if adapter.hidden_size(model) != k:  # OPT/Phi: the config keeps d; cut the shapes
        remove_hidden_channels(model, list(range(k, d)))
    for name in args.get("added_biases", []):
        linear = model.get_submodule(name)
        if linear.bias is None:
            add_zero_bias(linear)
    dtype = model.get_submodule(adapter.embeddings[0]).weight.dtype
    for name, spec in args["norms"].items():
        norm = StreamNorm(k, d, spec["eps"], shortcut=spec["shortcut"], head_map=spec["head_map"]).to(dtype)
        set_module(model, name, norm)
        if spec["shortcut"]:
            norm.pair_with(model.get_submodule(args["paired_writers"][name]))


def budget_shapes(model: nn.Module, config) -> list[Shape]:
    """For a parameter budget (:mod:`dress.pruning.budget`): every width, with what slicing adds back
    (a ``k x k`` shortcut per sub-block, a ``k x k`` head map for a tied RMS head) and what folding
    takes away (the norms' gains and biases). Exact for the RMS families (tested); OPT's count is
    off by terms linear in ``k`` (under 1% at 1B)."""
    adapter = adapter_for(model)
    layers = len(adapter.decoder_layers(model))
    shortcuts = layers * (1 if adapter.parallel_block else 2)
    head_map = 1 if model.config.tie_word_embeddings and adapter.norm_kind.startswith("rms") else 0
    norm_entries = sum(1 + norm_has_bias(norm) for _, norm in adapter.named_norms(model))
    return width_shapes(model, config, extra=lambda k: slicing_adds(k, shortcuts + head_map, norm_entries))

