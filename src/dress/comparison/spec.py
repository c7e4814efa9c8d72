"""What a comparison is: :class:`CompareConfig` (as the experiment files in ``experiments/`` write it).

A comparison is a base :class:`~dress.config.PruneConfig` (as a partial dict), the *variants* to run
(a method plus config overrides, under a label), the ratios, and optional *sweeps* (a config field
and its values), with the zero-shot and speed settings every row is measured under. Nothing here
loads a model or validates a variant's config: :mod:`dress.comparison.planning` does that.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dress.config_base import StrictConfig
from dress.errors import DressError
from dress.methods import aliases, methods


class Variant(StrictConfig):
    """One line of the table: ``method`` with dotted-field overrides, shown as ``label``."""

    label: str
    method: str
    set: dict[str, Any] = {}


class ZeroShotSettings(StrictConfig):
    enabled: bool = False
    tasks: list[str] = ["piqa", "winogrande", "hellaswag", "arc_easy", "arc_challenge"]
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    source: str = "auto"
    # Score only these variants' rows (None: every row; the dense row always). Zero-shot is the
    # expensive part of an entry on a CPU: a second calibration draw can be scored for perplexity only.
    labels: list[str] | None = None

    def scores(self, label: str) -> bool:
        return self.enabled and (self.labels is None or label in self.labels)

    def protocol(self) -> dict:
        """What decides the scores (not which rows get them): part of every fingerprint."""
        return self.model_dump(exclude={"labels"})


class CompareConfig(StrictConfig):
    """A whole comparison (the experiment files in ``experiments/`` are this, as YAML/JSON)."""

    base: dict[str, Any] = {}  # partial PruneConfig (dotted keys allowed)
    variants: list[Variant] = []
    ratios: list[float] = [0.25]
    sweep: dict[str, list[Any]] = {}  # dotted field -> values (a product over fields)
    zeroshot: ZeroShotSettings = ZeroShotSettings()
    speed: bool = False
    save_models: bool = False


def variant_from_name(name: str) -> Variant:
    """A method name (``dress``, ``slicegpt``, ...) or a registered alias (``dress-l1``, ...)."""
    if name in aliases():
        method, overrides = aliases()[name]
        return Variant(label=name, method=method, set=dict(overrides))
    return Variant(label=name, method=name)


def check_methods(variants: list[Variant]) -> None:
    """Refuse unknown methods before any work starts."""
    for v in variants:
        if v.method not in methods():
            raise DressError(
                f"unknown method {v.method!r} (variant {v.label!r}); methods: {', '.join(methods())}; "
                f"aliases: {', '.join(aliases())}"
            )
