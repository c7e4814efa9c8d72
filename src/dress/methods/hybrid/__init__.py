"""Width + depth (``dress-depth``): remove a few whole layers, then DReSS on the hidden width for the
rest of the parameter share (``method.py``). Both cuts are exact removals of whole structures, so the
result is a stock checkpoint with fewer layers and a narrower residual stream."""

from dress.methods import MethodSpec, register, register_config
from dress.methods.hybrid.config import HybridConfig

register_config("hybrid", HybridConfig)
register(MethodSpec(
    "dress-depth", "dress.methods.hybrid.method:dress_depth",
    "remove --hybrid-layers whole layers (SLEB/ShortGPT), then DReSS on the width for the rest of --ratio "
    "(a share of all parameters)",
    shapes="dress.methods.hybrid.method:budget_shapes", memory="dress.methods.hybrid.memory:MEMORY",
    exact_cut=True,  # of the width; the layers it removes first are scored, not trained away
))
