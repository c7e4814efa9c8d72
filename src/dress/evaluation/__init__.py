"""The paper's evaluation protocols (docs/evaluation.md): perplexity, zero-shot accuracy, speed.

- :mod:`dress.evaluation.perplexity`: non-overlapping windows, mean token NLL, exp.
- :mod:`dress.evaluation.zeroshot`: lm-eval on PIQA, WinoGrande, HellaSwag, ARC-e, ARC-c
  (standard tasks from the hub, or bundled offline copies).
- :mod:`dress.evaluation.bench`: prefill latency and generation throughput, dense vs pruned.

Import from the submodules (``from dress.evaluation.perplexity import perplexity``); nothing is
re-exported here, so the function ``perplexity`` never shadows the module of the same name.
The ``dress eval`` and ``dress bench`` commands are thin layers over these.
"""
