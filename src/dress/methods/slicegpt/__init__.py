"""SliceGPT (Ashkboos et al., 2024): rotate the residual stream by its PCA and slice it
(``method.py``; the rotations and norm folding in ``rotate.py``)."""

from dress.methods import MethodSpec, register

register(MethodSpec("slicegpt", "dress.methods.slicegpt.method:slicegpt",
                    "rotate the residual stream by its PCA and slice the weakest directions",
                    unsupported="dress.methods.slicegpt.method:unsupported_reason",
                    shapes="dress.methods.slicegpt.method:budget_shapes",
                    memory="dress.methods.slicegpt.memory:MEMORY", rebuild="dress.methods.slicegpt.method:rebuild"))
