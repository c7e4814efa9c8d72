"""Run by ``torchrun --standalone`` from tests/test_distributed.py (gloo, CPU):
``distributed_worker.py OUT MODE``.

Modes: ``ddp`` (2 processes, plain data parallel), ``fsdp`` (2 processes, accelerate's FSDP2 with
the shipped 8gpu-fsdp.yaml settings, on CPU through tests/cpu_fsdp.py) and ``fsdp-resume`` (1
FSDP2 process resuming the sharded checkpoint the 2-process ``fsdp`` run left). Every scenario has
a one-process twin in the test module, built from the same functions, so the test compares the
two. Results go to the folder OUT (the main process writes; per-rank checks write one file each).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from tiny_models import sample_ids, tiny_model

CHANNELS = [3, 10, 40]
# name -> RegularizeConfig overrides; the global batch (batch_size x grad_accum) is 4 in both:
# "accum" gives each rank whole micro-batches, "split" cuts every micro-batch across the ranks.
SCENARIOS = {"accum": {"batch_size": 2, "grad_accum": 2}, "split": {"batch_size": 4, "grad_accum": 1}}
SHRINKS = (0.3, 1.0)  # FSDP2 check: a partial shrink, then one that zeroes every group (scaled by s_g)


def regularize_config(**overrides):
    from dress.methods.dress.config import RegularizeConfig

    return RegularizeConfig(**{"steps": 6, "lr": 1e-3, "warmup_steps": 1, "lam": 1.5, **overrides})


def run_regularize(checkpoint_dir: Path | None = None, resume: bool = False, **overrides) -> torch.nn.Module:
    """DReSS regularization of the tiny llama on fixed data; the same call in 1 or N processes."""
    from dress.methods.dress.stage import regularize

    model = tiny_model("llama")
    regularize(model, CHANNELS, sample_ids(8, 16, seed=3), regularize_config(**overrides), seed=1,
               checkpoint_dir=checkpoint_dir, resume=resume)
    return model


def cli_args(model_dir: Path, corpus: Path, out: Path) -> list[str]:
    return ["prune", str(model_dir), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
            "--samples", "8", "--seq-len", "32", "--steps", "3", "--batch-size", "2", "--rft-steps", "2",
            "--rft-batch-size", "2", "--eval-seq-len", "32", "--eval-tokens", "128", "--device", "cpu",
            "--method", "dress", "--lam", "2"]


def _interrupted_run(checkpoint_dir: Path) -> None:
    """Stop every rank right after the first checkpoint (step 3 of 6), as a crash would."""
    import dress.training.loop as training

    real = training._checkpoint

    def checkpoint_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    training._checkpoint = checkpoint_then_stop
    try:
        run_regularize(checkpoint_dir=checkpoint_dir, checkpoint_every=3, **SCENARIOS["accum"])
    except KeyboardInterrupt:
        pass
    finally:
        training._checkpoint = real


def _record_resumed_step(path: Path) -> None:
    """Write the step a sharded resume starts from (a resume that found nothing starts at 0 and
    would still reach the uninterrupted weights, so the test needs to see it)."""
    import dress.training.loop as training

    real = training._resume

    def resume(*args, **kwargs):
        start, history = real(*args, **kwargs)
        path.write_text(str(start))
        return start, history

    training._resume = resume


def _fsdp2_proximal(out: Path, rank: int) -> None:
    """The proximal step on FSDP2 shards (raw ``fully_shard``, no accelerate) and
    the write-back of a sharded twin into the caller's model, against the single-process step."""
    from torch.distributed.fsdp import fully_shard

    from dress.training.engine import _full_tensor, _twin
    from dress.methods.dress.sharded import dtensor_proximal_step
    from dress.methods.dress.penalty import channel_groups, group_scales, proximal_step

    worst = 0.0
    for norm in ("l2", "l1"):
        reference, model = tiny_model("llama"), tiny_model("llama")
        slices = channel_groups(reference, CHANNELS)
        scales = group_scales(slices)
        r_ref = [proximal_step(slices, norm, shrink, None, scales) for shrink in SHRINKS]

        twin, _ = _twin(model)
        for layer in twin.model.layers:
            fully_shard(layer)
        fully_shard(twin)
        live = dict(twin.named_parameters())
        r_sharded = [dtensor_proximal_step(channel_groups(model, CHANNELS), live, norm, shrink, None, scales)
                     for shrink in SHRINKS]
        untouched = max((a - b).abs().max().item() for a, b in zip(model.state_dict().values(),
                                                                   tiny_model("llama").state_dict().values()))
        own = dict(model.named_parameters())
        for name, param in live.items():
            own[name].data.copy_(_full_tensor(param))
        diff = max((a - b).abs().max().item() for a, b in zip(reference.state_dict().values(),
                                                              model.state_dict().values()))
        relative = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(r_ref, r_sharded))
        worst = max(worst, diff, relative, untouched)
    (out / f"fsdp2_rank{rank}.json").write_text(json.dumps({"max_diff": worst}))


def main(out: Path, mode: str) -> None:
    from dress.cli import main as cli
    from dress.training.distributed import current_runtime

    if mode.startswith("fsdp"):
        from cpu_fsdp import allow_fsdp_on_cpu

        allow_fsdp_on_cpu()
    runtime = current_runtime("cpu")
    expected = {"ddp": ("ddp", 2), "fsdp": ("fsdp", 2), "fsdp-resume": ("fsdp", 1)}[mode]
    assert (runtime.engine, runtime.world) == expected, runtime
    prefix = "" if mode == "ddp" else "fsdp_"
    if mode == "fsdp-resume":
        _record_resumed_step(out / "fsdp_resumed_at.txt")
        model = run_regularize(checkpoint_dir=out / "fsdp_resume", resume=True, checkpoint_every=3,
                               **SCENARIOS["accum"])
        torch.save(model.state_dict(), out / "fsdp_resumed.pt")
        return
    for name, overrides in SCENARIOS.items():
        model = run_regularize(**overrides)
        if runtime.is_main:
            torch.save(model.state_dict(), out / f"{prefix}{name}.pt")
    _interrupted_run(out / f"{prefix}resume")
    if mode == "fsdp" and runtime.is_main:  # the 1-process resume will checkpoint over it
        progress = json.loads((out / "fsdp_resume" / "state.json").read_text())
        (out / "fsdp_interrupted_at.txt").write_text(str(progress["step"]))
    if mode == "ddp":
        _fsdp2_proximal(out, runtime.rank)
    runtime.barrier()
    status = cli(cli_args(out / "tiny", out / "corpus.txt", out / f"{prefix}pruned"))
    (out / f"{prefix}cli_rank{runtime.rank}.txt").write_text(str(status))
    if mode == "ddp":  # the README's `torchrun --nproc_per_node N -m dress prune MODEL --out OUT`: default batches
        status = cli(["prune", str(out / "tiny"), "--out", str(out / "readme_pruned"), "--calib", str(out / "corpus.txt"),
                      "--eval-source", str(out / "corpus.txt"), "--samples", "8", "--seq-len", "32", "--steps", "2",
                      "--rft-steps", "1", "--eval-seq-len", "32", "--eval-tokens", "128", "--device", "cpu"])
        (out / f"readme_cli_rank{runtime.rank}.txt").write_text(str(status))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
