"""Which hidden width to keep: near the asked ratio, valid for a stock config, fast in runtimes.

Two rules meet here (GUIDE §2):

* **stock configs**: transformers' Llama-family configs reject a ``hidden_size`` that is not a
  multiple of the attention head count, so the kept width ``d'`` must be one;
* **runtimes**: llama.cpp quantizes a matrix only if its row length is a multiple of 32 (Q8_0,
  Q4_0, and the fallbacks of K-quants), otherwise it stores it in F16: a pruned "Q4_K_M" model at
  width 432 was larger and slower than the dense one. Matrix kernels on CPUs and GPUs also prefer
  multiples of 32.

Contract of :func:`choose_width` (``d`` channels, ``ratio`` asked, ``heads`` = the stock rule's
multiple, ``alignment`` = the runtime's, 32 by default; see docs/evaluation.md for why 32 and not 64):

1. ``alignment == 1``: the exact ratio, rounded only to a multiple of ``heads`` (the old rule).
2. Otherwise the multiple of ``lcm(heads, alignment)`` nearest to ``d * (1 - ratio)`` is kept if it
   moves the width by at most ``max(heads, alignment) / 2`` channels **and** the ratio by at most
   :data:`MAX_RATIO_SHIFT` (so it is never further from the asked width than rounding to either
   rule alone, and a tiny model is not cut by a third to reach a multiple of 32).
3. Where no such width exists (SmolLM2: 9 heads, so stock and aligned widths are multiples of 288;
   25% asks for 432), the head-count width of rule 1 is kept and ``runtime_width`` says the
   multiple of ``alignment`` that ``dress export`` pads it to with zero channels. Zero channels are
   exact (norm gains and epsilon rescaled as in :mod:`dress.pruning.norms`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dress.errors import DressError

DEFAULT_ALIGNMENT = 32
MAX_RATIO_SHIFT = 0.025  # the aligned width may change the removed fraction by at most 2.5 points


@dataclass(frozen=True)
class WidthChoice:
    hidden: int  # d, the width before pruning
    width: int  # d', the width kept in the pruned checkpoint
    asked_ratio: float
    heads: int  # the stock config's multiple
    alignment: int  # the runtime's multiple (1: none asked)
    runtime_width: int  # what `dress export` pads to: a multiple of alignment, >= width
    note: str | None  # why the width differs from d * (1 - ratio), for the log

    @property
    def effective_ratio(self) -> float:
        return 1.0 - self.width / self.hidden

    @property
    def aligned(self) -> bool:
        return self.width % self.alignment == 0

    def as_record(self) -> dict:
        """What ``dress.json`` says about the width (beside ``hidden_size``)."""
        return {
            "asked_ratio": self.asked_ratio,
            "effective_ratio": round(self.effective_ratio, 6),
            "width_multiple": self.alignment,
            "heads_multiple": self.heads,
            "aligned": self.aligned,
            "runtime_width": self.runtime_width,
        }


def _nearest_multiple(x: float, step: int) -> int:
    return int(math.floor(x / step + 0.5)) * step  # halves round up, not to even


def round_up(width: int, alignment: int) -> int:
    return -(-width // alignment) * alignment


def choose_width(hidden: int, ratio: float, heads: int, alignment: int = DEFAULT_ALIGNMENT) -> WidthChoice:
    """The width to keep when removing ``ratio`` of ``hidden`` channels (see the module docstring)."""
    if not 0.0 < ratio < 1.0:
        raise DressError(f"--ratio must be strictly between 0 and 1 (got {ratio}); e.g. --ratio 0.25 removes 25%")
    if alignment < 1:
        raise DressError(f"--width-multiple must be at least 1 (got {alignment}); 1 keeps the exact ratio")
    heads = max(1, int(heads))
    exact = hidden * (1.0 - ratio)
    stock = _nearest_multiple(exact, heads)
    if stock <= 0 or stock >= hidden:
        raise DressError(
            f"--ratio {ratio} leaves no valid hidden width: {hidden} channels, widths must be a multiple of "
            f"{heads} (the attention head count) and strictly between 0 and {hidden}. Pick a ratio between "
            f"{heads / hidden:.3f} and {1 - heads / hidden:.3f}."
        )
    width, notes = stock, []
    if alignment > 1:
        step = math.lcm(heads, alignment)
        aligned = _nearest_multiple(exact, step)
        shift = abs(aligned - exact)
        if 0 < aligned < hidden and shift <= max(heads, alignment) / 2 and shift <= MAX_RATIO_SHIFT * hidden:
            width = aligned
        elif stock % alignment:
            notes.append(
                f"no width near {exact:g} is a multiple of both {heads} (heads) and {alignment} (runtimes): kept "
                f"{stock}; `dress export` pads it with zero channels to {round_up(stock, alignment)} for llama.cpp "
                "(exact)"
            )
    if not math.isclose(width, exact):
        rule = f"a multiple of {heads} (heads)"
        if alignment > 1 and width % alignment == 0:
            rule += f" and {alignment} (runtimes)"
        hint = f"; --width-multiple 1 keeps {stock}" if width != stock else ""
        notes.insert(0, f"hidden width {exact:g} rounded to {width}, {rule} (removing {hidden - width} of {hidden} "
                        f"channels, {(hidden - width) / hidden:.1%}{hint})")
    return WidthChoice(
        hidden=hidden, width=width, asked_ratio=float(ratio), heads=heads, alignment=alignment,
        runtime_width=round_up(width, alignment), note="; ".join(notes) or None,
    )


def reachable_widths(hidden: int, heads: int, alignment: int = DEFAULT_ALIGNMENT) -> dict[int, float]:
    """Every width :func:`choose_width` can keep, each with a ratio that makes it: the plain ratio
    ``1 - width / hidden`` where that makes it too, else the first ratio (in steps of the head count)
    that does. Ascending by width. The parameter budget and the memory plan enumerate the same set."""
    found: dict[int, float] = {}
    for kept in range(heads, hidden, heads):
        try:
            width = choose_width(hidden, 1.0 - kept / hidden, heads, alignment).width
        except DressError:
            continue
        if width not in found:
            plain = 1.0 - width / hidden
            exact = width == kept or choose_width(hidden, plain, heads, alignment).width == width
            found[width] = plain if exact else 1.0 - kept / hidden
    return dict(sorted(found.items()))

