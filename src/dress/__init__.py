"""dress: structured pruning of causal language models (DReSS, TRSP and baselines).

Public API (see :mod:`dress.api`)::

    import dress
    result = dress.prune("smollm2-135m", ratio=0.25)        # or a hub id, a folder, an nn.Module
    result.save("runs/smollm2-25")
    dress.evaluate(result.model, result.tokenizer, seq_len=512).ppl
    model = dress.load("runs/smollm2-25")                    # any checkpoint dress wrote, or any HF model
    dress.compare({"variants": [{"label": "dress", "method": "dress"}], "ratios": [0.25]}, "runs/cmp")

The CLI (``dress prune|eval|bench|compare``) is a thin layer over the same functions.
"""

__version__ = "0.1.0"

from dress.api import PruneResult, compare, evaluate, prune  # noqa: E402
from dress.errors import DressError  # noqa: E402
from dress.io.loading import load  # noqa: E402

__all__ = ["DressError", "PruneResult", "compare", "evaluate", "load", "prune", "__version__"]
