"""Calibration windows: the calibration documents tokenized once and cut into ``n`` windows of
``seq_len`` tokens (see :mod:`dress.data`), and the regularization:recovery split of those windows.

A run's ``data`` block (:class:`dress.config.DataConfig`) is turned into windows in one place:
:func:`draw_calibration` draws them (it depends only on :func:`draw_key` of the block and the
tokenizer) and :func:`split_calibration` splits them by ``data.split``. ``dress prune`` does both
at once; ``dress compare`` draws once per data block and splits per entry.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from dress.data.bundled import BUNDLED_TEXT
from dress.data.documents import DOC_JOINER, TextSource
from dress.data.hub import HUB_TEXT
from dress.errors import DressError

if TYPE_CHECKING:
    from dress.config import DataConfig


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer(text)`` starts with the BOS token (Gemma: yes; SmolLM2: no)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a").input_ids
    return bos is not None and len(ids) > 0 and ids[0] == bos


def _tokenize_calibration(tokenizer, source: TextSource) -> torch.Tensor:
    """The calibration part as one 1-D LongTensor, tokenized once without special tokens."""
    text = DOC_JOINER.join(source.calibration)
    ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
    return torch.tensor(ids, dtype=torch.long)


def _window_starts(n_tokens: int, body: int, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Start offsets of ``n_samples`` distinct non-overlapping windows of ``body`` tokens."""
    n_windows = n_tokens // body
    slack = n_tokens - n_windows * body
    offset = int(torch.randint(0, slack + 1, (1,), generator=generator))
    chosen = torch.randperm(n_windows, generator=generator)[:n_samples]
    return offset + chosen * body


def calibration_samples(
    tokenizer,
    source: str | TextSource,
    n_samples: int,
    seq_len: int,
    seed: int,
    *,
    allow_overlap: bool = False,
) -> torch.Tensor:
    """``[n_samples, seq_len]`` LongTensor of calibration windows (see the module docstring).

    Deterministic in ``(source, tokenizer, n_samples, seq_len, seed)``. Raises
    :class:`DressError` when the calibration part has too few tokens for the request.
    """
    if n_samples < 1 or seq_len < 2:
        raise DressError(f"need at least 1 sample of at least 2 tokens (got {n_samples} x {seq_len})")
    if not isinstance(source, TextSource):
        from dress.data import load_text  # the catalog imports this module: resolve names at call time

        source = load_text(source)
    text_source = source
    tokens = _tokenize_calibration(tokenizer, text_source)
    bos = tokenizer.bos_token_id if tokenizer_adds_bos(tokenizer) else None
    body = seq_len - 1 if bos is not None else seq_len
    _check_enough_tokens(text_source.name, len(tokens), body, n_samples, seq_len, allow_overlap)
    generator = torch.Generator().manual_seed(seed)
    if allow_overlap:
        starts = torch.randint(0, len(tokens) - body + 1, (n_samples,), generator=generator)
    else:
        starts = _window_starts(len(tokens), body, n_samples, generator)
    windows = torch.stack([tokens[start : start + body] for start in starts.tolist()])
    if bos is not None:
        windows = torch.cat([torch.full((n_samples, 1), bos, dtype=torch.long), windows], dim=1)
    return windows


def _check_enough_tokens(name: str, n_tokens: int, body: int, n_samples: int, seq_len: int, overlap: bool) -> None:
    needed = body if overlap else n_samples * body
    if n_tokens >= needed:
        return
    what = "one window" if overlap else f"{n_samples} non-overlapping windows of {body} text tokens"
    raise DressError(
        f"the calibration part of {name!r} has {n_tokens} tokens, but {n_samples} x {seq_len} needs "
        f"{needed} ({what}). Use fewer --samples, a shorter --seq-len, or a larger source "
        f"(bundled: {', '.join(BUNDLED_TEXT)}; online: {', '.join(HUB_TEXT)})."
    )


def parse_split(text: str) -> tuple[int, int]:
    """``"3:1"`` -> ``(3, 1)``: regularization:recovery weights, non-negative integers, not both 0."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if match is None:
        raise DressError(f"split {text!r} must look like 3:1 (regularization:recovery, two whole numbers)")
    ratio = int(match.group(1)), int(match.group(2))
    if sum(ratio) == 0:
        raise DressError(f"split {text!r} gives no samples to either part; use e.g. 3:1")
    return ratio


def split_samples(samples: torch.Tensor, ratio: tuple[int, int] = (3, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(regularization_part, recovery_part)``: the first and last rows of ``samples`` along dim 0.

    The regularization part gets ``round(n * a / (a + b))`` rows (halves rounded up); when both
    weights are positive and ``n >= 2`` each part keeps at least one row. Parts are views.
    """
    a, b = ratio
    if a < 0 or b < 0 or a + b == 0:
        raise DressError(f"split ratio {a}:{b} must be two non-negative numbers, not both 0")
    n = samples.shape[0]
    n_first = (2 * n * a + (a + b)) // (2 * (a + b))
    if a > 0 and b > 0 and n >= 2:
        n_first = min(max(n_first, 1), n - 1)
    return samples[:n_first], samples[n_first:]


def draw_key(data: DataConfig) -> tuple:
    """The fields of a data block that decide its draw (everything but ``split``): two blocks with
    the same key get the same windows from :func:`draw_calibration`."""
    return data.calib, data.samples, data.seq_len, data.seed


def draw_calibration(tokenizer, data: DataConfig, source: str | TextSource | None = None) -> torch.Tensor:
    """The ``[data.samples, data.seq_len]`` calibration windows of a data block, drawn with
    ``data.seed`` from ``source`` (default: ``data.calib``; the Python API passes its own text)."""
    return calibration_samples(tokenizer, data.calib if source is None else source, data.samples, data.seq_len, data.seed)


def split_calibration(samples: torch.Tensor, data: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(regularization_part, recovery_part)`` of ``samples`` by ``data.split`` (:func:`split_samples`)."""
    return split_samples(samples, parse_split(data.split))
