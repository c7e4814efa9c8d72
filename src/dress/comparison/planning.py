"""A comparison's entries: :func:`plan` turns a :class:`~dress.comparison.spec.CompareConfig` into
validated :class:`Entry` objects, before anything is loaded.

Every (variant, ratio, sweep point) is an *entry*, keyed ``label@ratio`` plus ``[field=value,...]``
for sweep points, in run order (ratio, then variant, then sweep point). Each entry's config is the
base, then the variant's overrides, then the sweep point, then its method and ratio. Entries may not
change ``model``, ``device``, ``bf16`` or the ``evaluate`` block (the same model and evaluation for
every row); unknown methods, duplicate labels and zero-shot labels that name no variant are refused.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from typing import Any

from dress.comparison.spec import CompareConfig, check_methods
from dress.config import expand_dotted, merge_trees as _merge, validate_config
from dress.errors import DressError

# Fields every entry must share (the same model and the same evaluation for all).
_SHARED_PREFIXES = ("model", "device", "bf16", "evaluate")


@dataclass(frozen=True)
class Entry:
    key: str
    label: str
    ratio: float
    point: dict[str, Any]  # sweep values of this entry
    config: Any  # PruneConfig


def plan(spec: CompareConfig) -> list[Entry]:
    """Every entry of the comparison, validated, in run order (ratio, then variant, then sweep)."""
    if not spec.variants:
        raise DressError("nothing to compare: give --methods (e.g. dress,direct,slicegpt) or variants in --config")
    if not spec.ratios:
        raise DressError("give at least one ratio (--ratios 0.25)")
    check_methods(spec.variants)
    for field in spec.sweep:
        if field.startswith(_SHARED_PREFIXES) or field in ("method", "ratio"):
            raise DressError(f"cannot sweep {field}: every entry shares the model, device and evaluation "
                             "(methods and ratios have their own options)")
    labels = [v.label for v in spec.variants]
    if len(set(labels)) != len(labels):
        raise DressError(f"variant labels must be unique, got {labels}")
    unknown = [label for label in spec.zeroshot.labels or [] if label not in labels]
    if unknown:
        raise DressError(f"zeroshot.labels names no variant: {unknown}; variants: {labels}")
    base = expand_dotted(spec.base)
    points = [dict(zip(spec.sweep, values)) for values in itertools.product(*spec.sweep.values())] or [{}]
    entries = []
    for ratio in spec.ratios:
        for variant in spec.variants:
            for point in points:
                tree = _merge(copy.deepcopy(base), expand_dotted(variant.set))
                tree = _merge(tree, expand_dotted(point))
                tree["method"], tree["ratio"] = variant.method, ratio
                config = validate_config(tree, where=f" (variant {variant.label!r})")
                suffix = "[" + ",".join(f"{k}={v}" for k, v in point.items()) + "]" if point else ""
                entries.append(Entry(f"{variant.label}@{ratio:g}{suffix}", variant.label, ratio, point, config))
    shared = {_shared(e.config) for e in entries}
    if len(shared) > 1:
        raise DressError("variants may not change model, device, bf16 or evaluate.*: every method gets the same evaluation")
    return entries


def _shared(config) -> str:
    dump = config.model_dump()
    return json.dumps({k: dump[k] for k in _SHARED_PREFIXES}, sort_keys=True, default=str)
