"""Depth baselines that remove whole decoder layers chosen by a score (``method.py``):
SLEB (greedy, by calibration perplexity) and ShortGPT (Block Influence). Their shared layer-count
and removal helpers are also used by TRSP."""

from dress.methods import MethodSpec, register, register_config
from dress.methods.depth.config import DepthConfig

register_config("depth", DepthConfig)
register(MethodSpec("sleb", "dress.methods.depth.method:sleb", "remove whole layers, greedily by calibration perplexity",
                    shapes="dress.pruning.budget:layer_shapes", memory="dress.methods.depth.memory:MEMORY"))
register(MethodSpec("shortgpt", "dress.methods.depth.method:shortgpt", "remove the whole layers of lowest Block Influence",
                    shapes="dress.pruning.budget:layer_shapes", memory="dress.methods.depth.memory:MEMORY"))
