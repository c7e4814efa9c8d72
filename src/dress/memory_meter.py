"""Peak memory within one block of code (a pipeline stage), not the process's maximum so far.

CUDA: ``torch.cuda.reset_peak_memory_stats`` at entry, ``max_memory_allocated`` at exit (torch's
allocator; the CUDA context is outside it). CPU: the process's resident set size, sampled every
``interval`` seconds by a daemon thread from entry to exit (``psutil``); a spike shorter than the
interval can be missed, so the reading is a lower bound within one interval of the true peak.
"""

from __future__ import annotations

import threading

import torch


class StagePeak:
    """``with StagePeak(device) as meter: ...`` then ``meter.peak`` (bytes) and ``meter.added`` (the peak
    above what the block started with). The one meter of the pipeline's stages and of ``dress bench``."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval
        self.peak = 0.0
        self.start = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StagePeak:
        import gc

        gc.collect()  # objects of the last stage caught in reference cycles (optimizer, hooks) go now
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = float(torch.cuda.memory_allocated(self.device))
            return self
        import psutil

        release_free_heap()
        process = psutil.Process()
        self.start = self.peak = float(process.memory_info().rss)

        def sample() -> None:
            while not self._stop.wait(self.interval):
                rss = float(process.memory_info().rss)
                if rss > self.peak:
                    self.peak = rss

        self._thread = threading.Thread(target=sample, name="dress-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = float(torch.cuda.max_memory_allocated(self.device))
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        import psutil

        self.peak = max(self.peak, float(psutil.Process().memory_info().rss))


    @property
    def added(self) -> float:
        return max(0.0, self.peak - self.start)


def release_free_heap() -> None:
    """Hand memory that Python/torch already freed back to the OS (glibc ``malloc_trim``), so the
    next stage's RSS starts from what is live, not from an earlier stage's high-water mark."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS may include freed heap; the reading stays an upper bound
        pass
