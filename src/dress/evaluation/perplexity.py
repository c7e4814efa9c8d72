"""Perplexity, the standard protocol of the pruning literature (docs/evaluation.md).

Protocol, exactly:

1. The evaluation text (documents joined with ``"\\n\\n"``) is tokenized **once**
   (:func:`tokenize_once`; the tokenizer's special tokens are added once, so a BOS, if the
   tokenizer adds one, sits only at the start of the first window).
2. The token stream is cut into ``n = len(tokens) // seq_len`` **non-overlapping** windows of
   ``seq_len`` tokens, from the start (:func:`make_windows`). The final partial window
   (``len(tokens) % seq_len`` tokens) is **dropped**, as are windows beyond ``max_windows``.
3. Each window is a separate forward pass with no context from the previous window. Within a
   window, token ``t`` (for ``t = 1 .. seq_len-1``) is predicted from tokens ``0 .. t-1``: every window
   scores **seq_len - 1** predictions; its first token is context only. This is SliceGPT's and
   SLEB's convention (logits ``[:, :-1]`` against labels ``[:, 1:]``).
4. ``nll_mean`` is the mean negative log-likelihood (nats) over all ``n * (seq_len - 1)`` scored
   tokens, accumulated in float64; ``ppl = exp(nll_mean)``. Since every window scores the same
   number of tokens, this equals the mean over windows of each window's mean NLL.

Numbers at different ``seq_len`` (or from different tokenizers) are not comparable; every
:class:`PerplexityResult` carries its ``seq_len`` and token counts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dress.errors import DressError
from dress.logs import progress as progress_bar

DEFAULT_SEQ_LEN = 2048


@dataclass(frozen=True)
class PerplexityResult:
    """One perplexity measurement and everything needed to compare it with another.

    ``n_tokens_total``: tokens in the tokenized text; ``tokens_dropped``: those in no evaluated
    window (the final partial window, plus windows cut by ``max_windows``);
    ``n_tokens_scored = n_windows * (seq_len - 1)``.
    """

    ppl: float
    nll_mean: float
    n_tokens_scored: int
    n_windows: int
    seq_len: int
    tokens_dropped: int
    n_tokens_total: int

    def to_dict(self) -> dict:
        return asdict(self)


def default_seq_len(model: nn.Module, cap: int = DEFAULT_SEQ_LEN) -> int:
    """``cap`` (2048, the paper's), or the model's ``max_position_embeddings`` if smaller."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(cap, int(limit)) if limit else cap


def tokenize_once(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one 1-D LongTensor of token ids (special tokens added once)."""
    # verbose=False: the text is meant to be longer than the model's limit; it is windowed later.
    ids = tokenizer(text, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def make_windows(token_ids: torch.Tensor, seq_len: int, max_windows: int | None = None) -> tuple[torch.Tensor, int]:
    """Cut a 1-D token stream into non-overlapping windows ``[n, seq_len]`` from its start.

    Returns ``(windows, tokens_dropped)``; the remainder ``len % seq_len`` and any windows past
    ``max_windows`` are dropped. Raises :class:`DressError` if not one full window fits.
    """
    if token_ids.dim() != 1:
        raise ValueError(f"token_ids must be 1-D, got shape {tuple(token_ids.shape)}")
    if seq_len < 2:
        raise DressError(f"--seq-len must be at least 2 (one context token and one scored token), got {seq_len}")
    total = token_ids.numel()
    n = total // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise DressError(
            f"the evaluation text has {total} tokens, fewer than one window of {seq_len}; "
            "use a smaller --seq-len or a longer text"
        )
    windows = token_ids[: n * seq_len].view(n, seq_len)
    return windows, total - n * seq_len


def window_nll_sum(logits: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL (float64 scalar) of ``windows [B, L]`` under ``logits [B, L, V]``.

    Scores positions ``1 .. L-1`` of each window. Half-precision logits are scored in float32
    (float32/float64 as they are), one window at a time, so the upcast copy and the log-softmax
    buffer are ``[L, V]``, never ``[B, L, V]``.
    """
    total = torch.zeros((), dtype=torch.float64, device=logits.device)
    targets = windows.to(logits.device)
    upcast = logits.dtype in (torch.float16, torch.bfloat16)
    for row in range(logits.shape[0]):
        pred = logits[row, :-1]  # [L-1, V] predictions for tokens 1..L-1
        nll = F.cross_entropy(pred.float() if upcast else pred, targets[row, 1:], reduction="sum")
        total += nll.double()
    return total


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def perplexity(
    model: nn.Module,
    token_ids: torch.Tensor,
    seq_len: int | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    *,
    max_windows: int | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of a causal LM on a token stream, by the protocol in the module docstring.

    ``model(input_ids=..., use_cache=False).logits`` must be ``[B, L, V]``; the model is run in
    ``torch.inference_mode`` on ``device`` (default: where its parameters are; the model is not
    moved). ``seq_len`` defaults to :func:`default_seq_len`; a ``seq_len`` beyond the model's
    ``max_position_embeddings`` is refused.
    """
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if seq_len is None:
        seq_len = default_seq_len(model)
    if limit and seq_len > int(limit):
        raise DressError(f"--seq-len {seq_len} exceeds the model's max_position_embeddings ({limit})")
    if batch_size < 1:
        raise DressError(f"--batch-size must be at least 1, got {batch_size}")
    windows, dropped = make_windows(token_ids, seq_len, max_windows)
    n = windows.shape[0]
    device = torch.device(device) if device is not None else _model_device(model)

    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    with torch.inference_mode(), progress_bar(total=n, unit="window", desc=f"perplexity L={seq_len}", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = windows[start : start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits
            nll_sum += window_nll_sum(logits, batch)
            del logits
            bar.update(batch.shape[0])

    scored = n * (seq_len - 1)
    nll_mean = float(nll_sum.item()) / scored
    return PerplexityResult(
        ppl=math.exp(nll_mean) if nll_mean < 700 else math.inf,
        nll_mean=nll_mean,
        n_tokens_scored=scored,
        n_windows=n,
        seq_len=seq_len,
        tokens_dropped=dropped,
        n_tokens_total=int(token_ids.numel()),
    )
