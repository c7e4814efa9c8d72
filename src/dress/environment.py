"""Facts about where this process runs: environment switches and the device to use."""

from __future__ import annotations

import os

from dress.errors import DressError

TRUTHY = ("1", "true", "yes", "on")


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to a true value (1, true, yes, on; any case)."""
    return os.environ.get(name, "").strip().lower() in TRUTHY


def resolve_device(spec: str | None):
    """``torch.device(spec)``, or cuda if available else cpu when ``spec`` is empty; a CUDA device
    on a machine without CUDA is a clear error."""
    import torch

    if spec:
        if spec.startswith("cuda") and not torch.cuda.is_available():
            raise DressError(f"--device {spec} requested but CUDA is not available; use --device cpu")
        try:
            return torch.device(spec)
        except RuntimeError:
            raise DressError(f"--device {spec!r} is not a device; use cpu, cuda or cuda:N") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
