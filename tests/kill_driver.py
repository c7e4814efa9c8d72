"""``python tests/kill_driver.py SLOW prune ...``: ``dress`` with every stage stretched by SLOW
seconds, so that tests/test_kills.py can SIGKILL it inside any stage it chooses.

Only this driver is slowed; dress itself is unchanged. Each stretch prints a marker line
``[kill-driver] <stage>`` to stdout (flushed) when it begins, so the test knows where the process is.
Stages: load (model loading), score (channel choice), step (each optimizer step of every training
stage), checkpoint (between the two files of a training checkpoint), remove (channel removal),
evaluate (each perplexity), write (the output folder holds the weights, ``dress.json`` not yet).
"""

from __future__ import annotations

import sys
import time


def stretch(stage: str, seconds: float) -> None:
    print(f"[kill-driver] {stage}", flush=True)
    time.sleep(seconds)


def wrap(owner, name: str, stage: str, seconds: float, after: bool = False) -> None:
    real = getattr(owner, name)

    def slowed(*args, **kwargs):
        if not after:
            stretch(stage, seconds)
        result = real(*args, **kwargs)
        if after:
            stretch(stage, seconds)
        return result

    setattr(owner, name, slowed)


def install(seconds: float) -> None:
    import safetensors.torch
    import transformers.modeling_utils  # noqa: F401 - binds the real save_file for the output's weights

    import dress.io.saving
    import dress.training.engine
    import dress.methods.dress.method
    import dress.pipeline

    wrap(dress.io.saving, "load_checkpoint", "load", seconds)
    wrap(dress.methods.dress.method, "select_channels", "score", seconds)
    wrap(dress.training.engine.LocalEngine, "clip", "step", seconds)
    wrap(safetensors.torch, "save_file", "checkpoint", seconds / 2, after=True)  # training checkpoints only
    wrap(dress.methods.dress.method, "remove_hidden_channels", "remove", seconds)
    wrap(dress.pipeline, "_held_out_ppl", "evaluate", seconds / 2)
    wrap(dress.io.saving, "write_record", "write", seconds)


if __name__ == "__main__":
    install(float(sys.argv[1]))
    from dress.cli import main

    sys.exit(main(sys.argv[2:]))
