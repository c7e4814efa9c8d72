"""The memory this machine has free now: the one module of the plan that asks the system
(``torch.cuda.mem_get_info``, psutil or ``/proc/meminfo``)."""

from __future__ import annotations


def available_memory(device_type: str) -> tuple[float, float]:
    """``(device bytes free, host bytes available)`` for the fit check: CUDA's free memory on the
    current device (``torch.cuda.mem_get_info``), and the host's available RAM (``MemAvailable``)."""
    host = _host_available()
    if device_type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return float(free), host
    return host, host


def _host_available() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with accelerate
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    return float("inf")
