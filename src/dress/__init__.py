"""dress: structured pruning of causal language models (DReSS, TRSP and baselines).

Public API::

    import dress
    model = dress.load("runs/smollm2-25")     # any checkpoint dress wrote, or any HF model
"""

__version__ = "0.1.0"

from dress.errors import DressError  # noqa: E402
from dress.loading import load  # noqa: E402

__all__ = ["DressError", "load", "__version__"]
