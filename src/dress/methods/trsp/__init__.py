"""TRSP (arXiv 2505.18232): learn which layers to drop with gated, regularized training, move
their knowledge into the kept layers, then remove them (``method.py``)."""

from dress.methods import MethodSpec, register, register_config
from dress.methods.trsp.config import TRSPConfig

register_config("trsp", TRSPConfig)
register(MethodSpec("trsp", "dress.methods.trsp.method:trsp",
                    "two-stage regularized removal of whole layers (DReSS's sibling)",
                    shapes="dress.pruning.budget:layer_shapes", memory="dress.methods.trsp.memory:MEMORY",
                    exact_cut=True))
