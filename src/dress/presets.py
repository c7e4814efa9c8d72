"""Named protocols: which data, how much of it, and how the result is evaluated.

* ``cpu-demo`` -- the PruneConfig defaults: 192 x 256 bundled windows, evaluation at 512 on 32K
  tokens; finishes on a 2-core CPU in minutes. Numbers at this scale do not compare with the paper's.
* ``paper`` -- the DReSS paper's protocol: WikiText-2 (hub), 1000 x 2048 tokens split 3:1,
  perplexity on the whole WikiText-2 test set at context 2048; the training budget of
  ``configs/llama2-7b-paper.json`` (188 steps of 8 windows, gradient checkpointing; recovery checkpoints
  too: at 13B, LoRA without it holds a bf16 copy of the weights and 2048-token activations of every layer).

The rule when no ``--preset`` is given (:func:`default_preset`): ``paper`` for a model that is not
bundled on a GPU (a 7B model on an H100 should not silently run the CPU demo), ``cpu-demo``
otherwise. Options given beside a preset override it; :func:`apply_preset` keeps every field the
user set (pydantic's ``model_fields_set``) and :func:`differences` lists them for the summary and
``dress.json``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dress.errors import DressError
from dress.io.bundled import BUNDLED_MODELS
from dress.methods import config_blocks

# The common blocks' values; each method's own block adds its values from its folder (``presets`` of
# its config class, e.g. DReSS's regularization budget), see :func:`preset_values`.
COMMON_PRESETS: dict[str, dict[str, Any]] = {
    "cpu-demo": {},
    "paper": {
        "data": {"calib": "wikitext2", "samples": 1000, "seq_len": 2048, "split": "3:1"},
        "recovery": {"steps": 32, "lr": 2e-4, "batch_size": 1, "grad_accum": 8, "gradient_checkpointing": True},
        "evaluate": {"source": "wikitext2", "seq_len": 2048, "max_tokens": None, "batch_size": 4},
    },
}
PRESETS = tuple(COMMON_PRESETS)


def preset_values(name: str) -> dict[str, Any]:
    """Every value preset ``name`` sets: the common blocks' and each method block's own."""
    values = dict(COMMON_PRESETS[name])
    for section, block in config_blocks().items():
        own = getattr(block, "presets", {}).get(name)
        if own:
            values[section] = own
    return values


def default_preset(model: str | None, device_type: str) -> str:
    """The preset a run gets without ``--preset`` (module docstring)."""
    bundled = model is None or model in BUNDLED_MODELS
    return "paper" if device_type == "cuda" and not bundled else "cpu-demo"


def _explicit(model: BaseModel) -> dict[str, Any]:
    """The fields of ``model`` that were set explicitly (recursively), as a nested dict."""
    out: dict[str, Any] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[name] = _explicit(value)
        else:
            out[name] = value
    return out


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_preset(config, name: str):
    """``config`` on top of preset ``name``: the preset's values where the user set nothing."""
    if name not in PRESETS:
        raise DressError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    data = _merge(preset_values(name), _explicit(config))
    data["preset"] = name
    return type(config).model_validate(data)


def differences(config) -> dict[str, Any]:
    """Every dotted field whose value differs from ``config.preset``'s (its own defaults included)."""
    name = config.preset or "cpu-demo"
    reference = type(config).model_validate({**(preset_values(name) if name in PRESETS else {}), "preset": name}).model_dump()
    out: dict[str, Any] = {}

    def walk(a: dict, b: dict, prefix: str) -> None:
        for key, value in a.items():
            if isinstance(value, dict) and isinstance(b.get(key), dict):
                walk(value, b[key], f"{prefix}{key}.")
            elif b.get(key) != value:
                out[prefix + key] = value

    walk(config.model_dump(), reference, "")
    for key in ("model", "preset"):
        out.pop(key, None)
    return out
