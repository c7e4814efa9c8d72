"""SliceGPT's building blocks: gain-free stream norms, norm fusion, and rotation of the residual stream.

Conventions. Hidden states are row vectors ``x [..., d]``. A *basis* ``B [d, d]`` has orthonormal
columns (the eigenvectors of the stream's second-moment matrix, largest eigenvalue first); the
stream expressed in ``B`` and sliced to its first ``k`` directions is ``x' = x @ B[:, :k]`` ``[..., k]``.
With ``Bk = B[:, :k]`` (``[d, k]``), ``nn.Linear.weight`` being ``[out, in]``:

* reader (input columns):  ``W [out, d] -> W @ Bk``  ``[out, k]``;
* writer (output rows):    ``W [d, in] -> Bk.T @ W``  ``[k, in]``, bias ``b [d] -> b @ Bk``;
* embedding:               ``E [V, d] -> E @ Bk``     ``[V, k]``;
* residual shortcut from basis ``Ba`` to ``Bb``: ``S = Ba[:, :k].T @ Bb[:, :k]`` ``[k, k]``.

Invariants (tested): norm fusion (:func:`fold_norms`) leaves every logit unchanged; with ``k = d``
every rotation is exact too, because a gain-free RMS norm commutes with orthogonal maps
(``rms(x @ Q) = rms(x)``); slicing directions in which the stream has no energy is exact, because
:class:`StreamNorm` keeps the statistics of the full width (as :mod:`dress.pruning.norms` does).

LayerNorm families (OPT, Phi) become RMS families first, as in SliceGPT: every writer to the
stream (embeddings, writer rows and biases) is centred, so the stream has zero mean over its ``d``
channels and LayerNorm's mean subtraction is the identity; LayerNorm then *is* RMS normalisation
followed by the gain and bias, which move into the readers (a bias becomes ``reader.bias += W @ b``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dress.adapters import Adapter
from dress.adapters.base import norm_has_bias
from dress.errors import DressError


class StreamNorm(nn.Module):
    """RMS normalisation of the residual stream without a gain (the gain lives in the readers)::

        y = x / sqrt(sum(x ** 2) / full_width + eps)

    ``full_width`` is the width before slicing, so removing directions that carry no energy
    changes nothing.

    Optional parts, both ``[k, k]`` ``nn.Linear`` without bias:

    ``shortcut`` (``S``): after rotation, the sub-block this norm opens writes into the *next*
    basis while the residual it is added to is still in this norm's basis; SliceGPT multiplies the
    residual by ``S``. The decoder layer computes ``residual + writer(...)`` itself, and this norm
    is the only module that sees the residual, so it hands ``x @ S - x`` to its paired writer
    (:meth:`pair_with` installs a forward hook there) and the layer's sum becomes
    ``x @ S + writer(...)``. The hand-over is one tensor, set here and consumed by the next call of
    the writer (a writer called without its norm is an error).

    ``head_map`` (``M``): applied to the output; the final norm of a model with a tied head uses it
    to carry the final gain and the change of basis between the last layer and the embeddings
    (``logits = y @ M @ E'.T``), so the head stays tied.
    """

    def __init__(self, width: int, full_width: int, eps: float, *, shortcut: bool = False, head_map: bool = False):
        super().__init__()
        self.width = width
        self.full_width = full_width
        self.eps = float(eps)
        self.shortcut = nn.Linear(width, width, bias=False) if shortcut else None
        self.head_map = nn.Linear(width, width, bias=False) if head_map else None
        self._pending: torch.Tensor | None = None
        self._hook = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., width]
        if self.shortcut is not None:
            self._pending = self.shortcut(x) - x  # [..., width]; residual correction for the writer
        dtype = x.dtype
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) / self.full_width + self.eps)
        y = y.to(dtype)
        if self.head_map is not None:
            y = self.head_map(y)
        return y

    def pair_with(self, writer: nn.Module) -> None:
        """Let ``writer`` add this norm's residual correction to its output (see the class doc)."""
        if self.shortcut is None:
            raise DressError("a StreamNorm without a shortcut has nothing to hand to a writer")
        if self._hook is not None:
            self._hook.remove()
        self._hook = writer.register_forward_hook(self._add_pending)

    def _add_pending(self, _module, _args, output: torch.Tensor) -> torch.Tensor:
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("residual shortcut: the writer ran without its norm (a StreamNorm must run first)")
        return output + pending.to(output.dtype)

    def clear(self) -> None:
        """Drop a hand-over that will not be consumed (e.g. a forward stopped on purpose)."""
        self._pending = None

    def extra_repr(self) -> str:
        return f"{self.width}, full_width={self.full_width}, eps={self.eps}"


@dataclass(frozen=True)
class SubBlock:
    """One norm, the readers it feeds and the writers whose outputs join the residual it saw
    (names relative to a decoder layer). Sequential blocks have two per layer, parallel ones one."""

    norm: str
    readers: tuple[str, ...]
    writers: tuple[str, ...]


def sub_blocks(adapter: Adapter) -> tuple[SubBlock, ...]:
    """The sub-blocks of one decoder layer, in execution order.

    Sequential blocks: the first norm feeds the readers that live under the first writer's parent
    module (``self_attn.*``), the second norm the others (the MLP).
    """
    if adapter.parallel_block:
        if len(adapter.layer_norms) != 1:
            raise DressError("a parallel block must have exactly one norm")
        return (SubBlock(adapter.layer_norms[0], adapter.layer_readers, adapter.layer_writers),)
    if len(adapter.layer_norms) != 2 or len(adapter.layer_writers) != 2:
        raise DressError(
            f"SliceGPT needs layers with one norm before each of two sub-blocks; {adapter.model_types[0]} has "
            f"norms {adapter.layer_norms}"
        )
    attn_parent = adapter.layer_writers[0].rpartition(".")[0] + "."
    attn = tuple(r for r in adapter.layer_readers if r.startswith(attn_parent))
    mlp = tuple(r for r in adapter.layer_readers if not r.startswith(attn_parent))
    return (
        SubBlock(adapter.layer_norms[0], attn, (adapter.layer_writers[0],)),
        SubBlock(adapter.layer_norms[1], mlp, (adapter.layer_writers[1],)),
    )


def norm_eps(norm: nn.Module) -> float:
    for attr in ("variance_epsilon", "eps"):
        value = getattr(norm, attr, None)
        if isinstance(value, float):
            return value
    raise DressError(f"cannot read the epsilon of {type(norm).__name__}")


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _assign(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a parameter (new shape allowed), keeping dtype, device and requires_grad."""
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.to(old.dtype).contiguous(), requires_grad=old.requires_grad))


def add_zero_bias(linear: nn.Linear) -> None:
    """Give a bias-free Linear a zero bias (LayerNorm biases folded into it need a place)."""
    w = linear.weight
    linear.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device), requires_grad=w.requires_grad)


@dataclass
class FoldResult:
    """Structure facts of a folded model (recorded so that loading can rebuild it)."""

    eps: dict[str, float]  # norm name -> epsilon
    added_biases: list[str] = field(default_factory=list)  # readers that got a bias
    untied: bool = False  # a tied head had to be untied (LayerNorm families)
    head_map: bool = False  # the final norm carries the tied head's map


@torch.no_grad()
def fold_norms(model: nn.Module, adapter: Adapter) -> FoldResult:
    """Replace every residual norm by a gain-free :class:`StreamNorm` of full width, moving the
    gains (and LayerNorm biases) into the readers. Logits are unchanged (up to float error).

    A tied head cannot absorb the final gain without changing the embedding, so the final norm of
    a tied RMS model gets a ``head_map = diag(gain)``. LayerNorm families are centred first (see the
    module docstring); a tied LayerNorm head is untied, since the centred embedding cannot serve as
    the head of a stream whose normed output is not centred.
    """
    if adapter.norm_kind not in ("rms", "layernorm"):
        raise DressError(f"SliceGPT norm fusion supports RMSNorm and LayerNorm, not {adapter.norm_kind!r}")
    tied = adapter.is_tied(model)
    head = model.get_submodule(adapter.lm_head)
    result = FoldResult(eps={})
    if adapter.norm_kind == "layernorm":
        if tied:
            head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
            model.config.tie_word_embeddings = False
            result.untied, tied = True, False
        _center_stream_writers(model, adapter)

    d = adapter.hidden_size(model)
    for i, layer in enumerate(adapter.decoder_layers(model)):
        for block in sub_blocks(adapter):
            name = f"{adapter.layers}.{i}.{block.norm}"
            readers = [(f"{adapter.layers}.{i}.{r}", layer.get_submodule(r)) for r in block.readers]
            _fold_into_readers(model, name, readers, result)
            set_module(model, name, StreamNorm(d, d, result.eps[name]))
    final = model.get_submodule(adapter.final_norm)
    if tied:
        result.eps[adapter.final_norm] = norm_eps(final)
        new = StreamNorm(d, d, result.eps[adapter.final_norm], head_map=True)
        new.to(device=final.weight.device, dtype=final.weight.dtype)
        new.head_map.weight.copy_(torch.diag(final.weight.detach()))
        result.head_map = True
    else:
        _fold_into_readers(model, adapter.final_norm, [(adapter.lm_head, head)], result)
        new = StreamNorm(d, d, result.eps[adapter.final_norm])
    set_module(model, adapter.final_norm, new)
    return result


def _fold_into_readers(model: nn.Module, norm_name: str, readers, result: FoldResult) -> None:
    norm = model.get_submodule(norm_name)
    result.eps[norm_name] = norm_eps(norm)
    gain = norm.weight.detach().double()  # [d]
    bias = norm.bias.detach().double() if norm_has_bias(norm) else None  # [d]
    for reader_name, reader in readers:
        w = reader.weight.detach().double()  # [out, d]
        if bias is not None and bool(bias.any()):
            if reader.bias is None:
                add_zero_bias(reader)
                result.added_biases.append(reader_name)
            reader.bias.add_((w @ bias).to(reader.bias.dtype))
        reader.weight.copy_((w * gain[None, :]).to(reader.weight.dtype))


def _center_stream_writers(model: nn.Module, adapter: Adapter) -> None:
    """Subtract each written vector's mean over the d channels (embedding rows, writer columns and
    biases), so the residual stream is mean-free and LayerNorm's centring is the identity."""
    for _, embedding in adapter.named_embeddings(model):
        embedding.weight.sub_(embedding.weight.mean(dim=1, keepdim=True))  # [V, d]
    for _, writer in adapter.named_writers(model):
        writer.weight.sub_(writer.weight.mean(dim=0, keepdim=True))  # [d, in]
        if writer.bias is not None:
            writer.bias.sub_(writer.bias.mean())


# ---- rotation (pure tensor edits) ----------------------------------------------------------
@torch.no_grad()
def rotate_reader(linear: nn.Linear, basis_k: torch.Tensor) -> None:
    """``W [out, d] -> W @ Bk [out, k]``; bias untouched."""
    w = linear.weight.detach().double()
    _assign(linear, "weight", w @ basis_k.to(w.device, torch.float64))
    linear.in_features = basis_k.shape[1]


@torch.no_grad()
def rotate_writer(linear: nn.Linear, basis_k: torch.Tensor) -> None:
    """``W [d, in] -> Bk.T @ W [k, in]``, ``b [d] -> b @ Bk``."""
    bk = basis_k.to(linear.weight.device, torch.float64)
    _assign(linear, "weight", bk.T @ linear.weight.detach().double())
    if linear.bias is not None:
        _assign(linear, "bias", linear.bias.detach().double() @ bk)
    linear.out_features = basis_k.shape[1]


@torch.no_grad()
def rotate_embedding(embedding: nn.Embedding, basis_k: torch.Tensor) -> None:
    """``E [V, d] -> E @ Bk [V, k]``."""
    w = embedding.weight.detach().double()
    _assign(embedding, "weight", w @ basis_k.to(w.device, torch.float64))
    embedding.embedding_dim = basis_k.shape[1]


@torch.no_grad()
def set_linear(linear: nn.Linear, matrix: torch.Tensor) -> None:
    """Make ``linear(y) == y @ matrix`` (``matrix [k_in, k_out]``; weight is its transpose)."""
    _assign(linear, "weight", matrix.T.to(linear.weight.device))
    linear.in_features, linear.out_features = matrix.shape


def principal_basis(second_moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eigenvalues [d] descending, basis [d, d])`` of a symmetric ``X^T X`` (float64)."""
    h = second_moment.double()
    values, vectors = torch.linalg.eigh((h + h.T) / 2)  # ascending
    return values.flip(0), vectors.flip(1)
