"""The paper's evaluation protocols (GUIDE §6): perplexity, zero-shot accuracy, speed.

- :mod:`dress.evaluation.perplexity`: non-overlapping windows, mean token NLL, exp.
- :mod:`dress.evaluation.zeroshot`: lm-eval on PIQA, WinoGrande, HellaSwag, ARC-e, ARC-c
  (standard tasks from the hub, or bundled offline copies).
- :mod:`dress.evaluation.bench`: prefill latency and generation throughput, dense vs pruned.

The ``dress eval`` and ``dress bench`` commands are thin layers over these.
"""

from dress.evaluation.bench import BenchSettings, benchmark, ideal_speedup, speed_ratios
from dress.evaluation.perplexity import PerplexityResult, default_seq_len, make_windows, perplexity, tokenize_once
from dress.evaluation.zeroshot import TASKS, ZeroShotResult, zeroshot

__all__ = [
    "TASKS",
    "BenchSettings",
    "PerplexityResult",
    "ZeroShotResult",
    "benchmark",
    "default_seq_len",
    "ideal_speedup",
    "make_windows",
    "perplexity",
    "speed_ratios",
    "tokenize_once",
    "zeroshot",
]
