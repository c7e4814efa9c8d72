"""K-FAC factors of every decoder linear from calibration windows (LLM Surgeon's curvature).

For a linear layer with input ``x`` (``[tokens, C]``) and loss gradient ``g`` w.r.t. its output
(``[tokens, R]``), K-FAC approximates the Fisher of ``W~ = [W | b]`` by ``G (x) A`` with

    A = sum_t x~_t x~_t^T / T,   G = sum_t g_t g_t^T / T,

``x~ = [x, 1]`` when the layer has a bias, ``T`` the number of calibration tokens. The loss of each
window is its *mean* next-token cross-entropy with the true next tokens (the empirical Fisher,
the official default), exactly as if each window were run alone (batching changes nothing). Both
factors accumulate in fp32 (fp64 if the model is fp64); the ``1/T`` convention is the same for every
layer, so costs compare across layers.

Layers that read the same tensor (q/k/v; gate/up; Phi's parallel block) share one input moment.
Gradients reach the outputs through the input embeddings (made to require grad), so no weight
gradient is ever computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dress.adapters import Adapter


@dataclass
class InputMoment:
    """``sum x^T x`` ``[C, C]``, ``sum x`` ``[C]`` and the token count for one input tensor."""

    xx: torch.Tensor
    x_sum: torch.Tensor
    tokens: int = 0


@dataclass
class Factors:
    """K-FAC factors of named linears: ``g[name]`` ``[R, R]`` and ``a(name)`` ``[C', C']``."""

    g: dict[str, torch.Tensor]
    moments: dict[str, InputMoment]
    reads: dict[str, str]  # linear -> key of its input moment
    bias: dict[str, bool]
    tokens: int = 0
    loss: float = 0.0  # mean calibration loss over the windows
    windows: int = 0
    extra: dict = field(default_factory=dict)

    def a(self, name: str) -> torch.Tensor:
        """``A`` of ``name`` (bias-augmented when the layer has a bias), normalised by the tokens."""
        m = self.moments[self.reads[name]]
        if not self.bias[name]:
            return m.xx / m.tokens
        c = m.xx.shape[0]
        out = m.xx.new_empty(c + 1, c + 1)
        out[:c, :c] = m.xx
        out[:c, c] = m.x_sum
        out[c, :c] = m.x_sum
        out[c, c] = m.tokens
        return out / m.tokens

    def g_of(self, name: str) -> torch.Tensor:
        return self.g[name] / self.tokens

    def drop(self, name: str) -> None:
        """Free ``name``'s output factor (and its input moment once no other layer reads it)."""
        self.g.pop(name, None)
        key = self.reads.pop(name, None)
        if key is not None and key not in self.reads.values():
            self.moments.pop(key, None)


def decoder_linears(model: nn.Module, adapter: Adapter) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of every decoder layer that reads or writes (q, k, v, o, gate, up, down;
    OPT/Phi: q, k, v, out, fc1, fc2), by full dotted name, in layer order."""
    out: dict[str, nn.Linear] = {}
    for i, layer in enumerate(adapter.decoder_layers(model)):
        for rel in adapter.layer_readers + adapter.layer_writers:
            out[f"{adapter.layers}.{i}.{rel}"] = layer.get_submodule(rel)
    return out


def estimate_factors(
    model: nn.Module,
    adapter: Adapter,
    windows: torch.Tensor,
    *,
    batch_size: int = 1,
    device: torch.device | None = None,
    progress=None,
) -> Factors:
    """K-FAC factors of every decoder linear on ``windows`` ``[n, seq]`` (see module doc)."""
    device = device or next(model.parameters()).device
    linears = decoder_linears(model, adapter)
    dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    factors = Factors(g={}, moments={}, reads={}, bias={n: m.bias is not None for n, m in linears.items()})
    seen: dict[int, tuple[str, torch.Tensor]] = {}  # id(input) -> (moment key, input) within one forward
    handles = []

    def on_forward(name):
        def hook(_module, args, output):
            x = args[0]
            hit = seen.get(id(x))
            if hit is not None and hit[1] is x:
                factors.reads[name] = hit[0]
            else:
                seen[id(x)] = (name, x)
                factors.reads[name] = name
                flat = x.detach().reshape(-1, x.shape[-1]).to(dtype)  # [tokens, C]
                m = factors.moments.get(name)
                if m is None:
                    m = factors.moments[name] = InputMoment(
                        torch.zeros(flat.shape[1], flat.shape[1], dtype=dtype, device=flat.device),
                        torch.zeros(flat.shape[1], dtype=dtype, device=flat.device),
                    )
                m.xx.addmm_(flat.T, flat)
                m.x_sum += flat.sum(0)
                m.tokens += flat.shape[0]
            if output.requires_grad:
                output.register_hook(on_grad(name))

        return hook

    def on_grad(name):
        def hook(grad):
            flat = grad.detach().reshape(-1, grad.shape[-1]).to(dtype)  # [tokens, R]
            g = factors.g.get(name)
            if g is None:
                g = factors.g[name] = torch.zeros(flat.shape[1], flat.shape[1], dtype=dtype, device=flat.device)
            g.addmm_(flat.T, flat)

        return hook

    def grad_source(_module, _args, output):
        # Gradients must reach every linear's output; the weights themselves need none.
        if not output.requires_grad:
            output.requires_grad_(True)
        return output

    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    handles.append(model.get_submodule(adapter.embeddings[0]).register_forward_hook(grad_source))
    for name, linear in linears.items():
        handles.append(linear.register_forward_hook(on_forward(name)))
    was_training = model.training
    model.eval()
    total_loss = 0.0
    try:
        with torch.enable_grad():
            for start in range(0, windows.shape[0], batch_size):
                ids = windows[start : start + batch_size].to(device)
                seen.clear()
                logits = model(input_ids=ids, use_cache=False).logits  # [b, L, V]
                if logits.dtype != torch.float64:
                    logits = logits.float()
                nll = nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
                ).view(ids.shape[0], -1)  # [b, L-1]
                per_window = nll.mean(dim=1)  # each window's mean loss, as if run alone
                per_window.sum().backward()
                total_loss += float(per_window.detach().sum())
                factors.tokens += ids.numel()
                factors.windows += ids.shape[0]
                del logits, nll, per_window
                seen.clear()
                if progress is not None:
                    progress(factors.windows, windows.shape[0])
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    factors.loss = total_loss / max(factors.windows, 1)
    for name in linears:
        if name not in factors.g:  # no gradient reached it (cannot happen in a causal LM)
            out_features = linears[name].weight.shape[0]
            factors.g[name] = torch.zeros(out_features, out_features, dtype=dtype)
    return factors
