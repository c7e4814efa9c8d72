"""Pick the adapter for a model by ``config.model_type``."""

from __future__ import annotations

from dress.adapters.base import Adapter, parameter_count
from dress.adapters.families import ADAPTERS, SUPPORTED_MODEL_TYPES
from dress.errors import DressError


def adapter_for(model_or_config) -> Adapter:
    """The adapter for a model (or config); DressError naming the supported types otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            if hasattr(model_or_config, "config"):
                adapter.validate(model_or_config)
            return adapter
    raise DressError(
        f"model type {model_type!r} is not supported; dress supports: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )


__all__ = ["Adapter", "adapter_for", "parameter_count", "SUPPORTED_MODEL_TYPES"]
