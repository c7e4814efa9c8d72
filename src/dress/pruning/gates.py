"""Layer-level instruments built from forward hooks on stock modules (never a copied ``forward``):

* :class:`LayerGates` -- one learnable scalar ``s_i`` per decoder layer that scales everything the
  layer writes into the residual stream (TRSP's stage-1 weights);
* :func:`record_residual_updates` -- see each layer's input ``x`` and output ``y`` during a forward
  (TRSP's stage-2 penalty on ``y - x``, ShortGPT's Block Influence);
* :func:`skipped_layers` -- run the model as if some layers were removed, without rebuilding it,
  optionally starting from a cached hidden state (SLEB).

Where a gate acts. A decoder layer adds one or two *stream outputs* to the residual: the outputs of
its writers (o_proj/down_proj, out_proj/fc2, dense/fc2), or, in Gemma3, of the post-norms that follow
the writers (a post-norm would undo any scaling of the writer before it). The gate multiplies each
stream output by ``s_i``. Consequences, all tested:

* ``s_i = 1`` everywhere is the original model; ``s_i = 0`` makes layer ``i`` the identity, so
  removing it is lossless;
* the gated model is a stock model with rescaled weights: :meth:`LayerGates.fold` multiplies each
  writer's rows and bias (Gemma3: the post-norm gain ``1 + w``) by ``s_i``, exactly, for sequential
  and parallel blocks alike.

Why not ``y = x + s_i (f(x) - x)`` on the whole layer: in a sequential block the MLP reads
``x + attn``; scaling the layer's *sum* of updates would need the MLP to see the unscaled attention
output while the stream carries the scaled one, which no stock layer with rescaled weights can do,
so the learned scalars could not be folded into a stock checkpoint. For a parallel block (Phi) the
two forms are the same; for a sequential block the gated MLP reads ``x + s_i * attn``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from dress.adapters import Adapter, adapter_for

GATE_PARAMETER = "dress_gate"

# Families whose layers add something other than their writers' outputs to the residual stream.
# Gemma3: attention and MLP outputs pass through post-norms before the residual add.
_STREAM_OUTPUTS_BY_TYPE = {"gemma3_text": ("post_attention_layernorm", "post_feedforward_layernorm")}


def stream_outputs(model: nn.Module) -> tuple[str, ...]:
    """Layer-relative names of the modules whose outputs a decoder layer adds to the residual."""
    adapter = adapter_for(model)
    return _STREAM_OUTPUTS_BY_TYPE.get(model.config.model_type, adapter.layer_writers)


@torch.no_grad()
def scale_stream_output(module: nn.Module, factor: float, adapter: Adapter) -> None:
    """Multiply ``module``'s output by ``factor`` by editing its parameters (exact).

    Linear: rows and bias. Norm: its gain (and bias); Gemma's ``(1 + w)`` form scales ``1 + w``.
    """
    if isinstance(module, nn.Linear):
        module.weight.mul_(factor)
        if module.bias is not None:
            module.bias.mul_(factor)
        return
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"cannot scale the output of {type(module).__name__}: it has no weight")
    if adapter.norm_kind == "rms_one_plus":
        weight.copy_(factor * (1.0 + weight) - 1.0)
    else:
        weight.mul_(factor)
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.mul_(factor)


class LayerGates:
    """One scalar per decoder layer scaling the layer's stream outputs (see module docstring).

    The scalars are registered as parameter ``dress_gate`` (shape ``[]``, init 1) on each decoder
    layer, so they belong to ``model.parameters()`` and ``model.state_dict()``: the training loop
    optimizes them and its checkpoints (and resume) include them. While installed the model is not
    a stock checkpoint; call :meth:`fold` (keep the behaviour) or :meth:`remove` (drop the gates).
    """

    def __init__(self, model: nn.Module, init: float = 1.0):
        self.model = model
        self.adapter = adapter_for(model)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        names = stream_outputs(model)
        for layer in self.adapter.decoder_layers(model):
            if hasattr(layer, GATE_PARAMETER):
                raise RuntimeError("layer gates are already installed on this model")
            param = next(layer.parameters())
            gate = nn.Parameter(torch.full((), float(init), dtype=torch.float32, device=param.device))
            layer.register_parameter(GATE_PARAMETER, gate)
            for name in names:
                module = layer.get_submodule(name)
                self._handles.append(module.register_forward_hook(_gate_hook(layer)))

    @property
    def layers(self) -> nn.ModuleList:
        return self.adapter.decoder_layers(self.model)

    def parameters(self) -> list[nn.Parameter]:
        return [getattr(layer, GATE_PARAMETER) for layer in self.layers]

    def values(self) -> list[float]:
        return [float(p.detach()) for p in self.parameters()]

    @torch.no_grad()
    def set(self, values: Sequence[float]) -> None:
        for p, v in zip(self.parameters(), values, strict=True):
            p.fill_(float(v))

    @torch.no_grad()
    def fold(self) -> None:
        """Move every gate into its layer's weights (exact), then uninstall the gates."""
        names = stream_outputs(self.model)
        for layer in self.layers:
            s = float(getattr(layer, GATE_PARAMETER))
            if s != 1.0:
                for name in names:
                    scale_stream_output(layer.get_submodule(name), s, self.adapter)
        self.remove()

    def remove(self) -> None:
        """Uninstall hooks and gate parameters, leaving the weights as they are."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for layer in self.layers:
            if hasattr(layer, GATE_PARAMETER):
                delattr(layer, GATE_PARAMETER)


def _gate_hook(layer: nn.Module):
    def hook(_module, _inputs, output):
        # output: [batch, seq, d]; the gate is a 0-dim fp32 parameter (keeps a bf16 output bf16).
        return output * getattr(layer, GATE_PARAMETER).to(output.dtype)

    return hook


def _hidden_states_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs["hidden_states"]


@contextlib.contextmanager
def record_residual_updates(
    model: nn.Module, indices: Sequence[int], callback: Callable[[int, torch.Tensor, torch.Tensor], None]
) -> Iterator[None]:
    """While inside, every forward calls ``callback(i, x, y)`` for each decoder layer ``i`` in
    ``indices``: ``x`` its input hidden states, ``y`` its output, both ``[batch, seq, d]``, with
    autograd intact (a penalty built from them trains the model)."""
    layers = adapter_for(model).decoder_layers(model)
    handles = []
    inputs: dict[int, torch.Tensor] = {}

    def pre_hook(i):
        def hook(_module, args, kwargs):
            inputs[i] = _hidden_states_arg(args, kwargs)

        return hook

    def post_hook(i):
        def hook(_module, _args, _kwargs, output):
            callback(i, inputs.pop(i), output)

        return hook

    try:
        for i in indices:
            handles.append(layers[i].register_forward_pre_hook(pre_hook(i), with_kwargs=True))
            handles.append(layers[i].register_forward_hook(post_hook(i), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
        inputs.clear()


class _SkippedLayer(nn.Module):
    """Stands in for a removed decoder layer: returns its input hidden states."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@contextlib.contextmanager
def skipped_layers(
    model: nn.Module, indices: Sequence[int], resume_from: tuple[int, torch.Tensor] | None = None
) -> Iterator[None]:
    """Run ``model`` as if layers ``indices`` were removed (they are swapped for identities and put
    back on exit; nothing is rebuilt or copied).

    ``resume_from=(j, h)``: additionally skip layers ``0..j`` and feed ``h`` ``[batch, seq, d]`` --
    the hidden state that *leaves* layer ``j`` in the skipped model -- to what comes next (the next
    layer that runs, or the final norm). Used to avoid recomputing a shared prefix.
    """
    adapter = adapter_for(model)
    layers = adapter.decoder_layers(model)
    skip = set(int(i) for i in indices)
    if resume_from is not None:
        skip.update(range(resume_from[0] + 1))
    originals = {i: layers[i] for i in skip}
    handle = None
    try:
        for i in skip:
            layers[i] = _SkippedLayer()
        if resume_from is not None:
            _, hidden = resume_from
            following = [i for i in range(len(layers)) if i not in skip]
            target = layers[following[0]] if following else model.get_submodule(adapter.final_norm)

            def inject(_module, args, kwargs):
                if args:
                    return (hidden, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": hidden}

            handle = target.register_forward_pre_hook(inject, with_kwargs=True)
        yield
    finally:
        if handle is not None:
            handle.remove()
        for i, layer in originals.items():
            layers[i] = layer
