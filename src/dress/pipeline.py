"""``dress prune`` as a function: load -> calibrate -> (regularize) -> remove -> (recover) ->
evaluate -> save. Every method shares this path; only the middle differs.

Contract of :func:`run_prune`: the output folder appears only when everything succeeded (it is
assembled in a temporary sibling); an existing output is refused unless ``overwrite``; with
``resume`` the training stages continue from their checkpoints in ``<out>.checkpoints/``, which
is deleted after success. Returns the record written to ``dress.json``.
"""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from dress import __version__
from dress.adapters import adapter_for, parameter_count
from dress.checkpoint import check_output_dir, save_model
from dress.config import PruneConfig
from dress.errors import DressError
from dress.loading import load_model
from dress.methods import PruneContext, method_function, method_needs_data
from dress.training import clear_checkpoint

PRUNE_GAP_WINDOWS = 8  # held-out windows for the prune gap (loss after removal - before)


class StageClock:
    """Wall time and peak memory per stage (CUDA max-allocated on GPU, process RSS on CPU)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stages: dict[str, dict[str, float]] = {}

    @contextmanager
    def stage(self, name: str, log=print):
        log(f"[dress] {name} ...")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        self.stages[name] = {"seconds": round(seconds, 2), "peak_memory_gib": round(self._peak_gib(), 3)}
        log(f"[dress] {name}: {seconds:.1f} s")

    def _peak_gib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def resolve_device(config: PruneConfig) -> torch.device:
    if config.device:
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise DressError(f"--device {config.device} requested but CUDA is not available; use --device cpu")
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_prune(config: PruneConfig, out: Path, overwrite: bool = False, resume: bool = False, log=print) -> dict:
    from dress.data import calibration_samples, evaluation_text, parse_split, split_samples
    from dress.evaluation.perplexity import perplexity, tokenize_once

    out = Path(out)
    if not resume:
        check_output_dir(out, overwrite)
    work_dir = out.with_name(f"{out.name}.checkpoints")
    device = resolve_device(config)
    bf16 = config.bf16 if config.bf16 is not None else device.type == "cuda"
    torch.manual_seed(config.seed)
    clock = StageClock(device)

    with clock.stage("load model", log):
        loaded = load_model(config.model)
        model, tokenizer = loaded.model.to(device), loaded.tokenizer
        adapter = adapter_for(model)
    params_dense = parameter_count(model)

    needs_data = method_needs_data(config)
    reg_part = rec_part = None
    if needs_data:
        with clock.stage("calibration data", log):
            samples = calibration_samples(
                tokenizer, config.data.calib, config.data.samples, config.data.seq_len, config.data.seed
            )
            reg_part, rec_part = split_samples(samples, parse_split(config.data.split))
        log(f"[dress] calibration: {samples.shape[0]} x {samples.shape[1]} tokens from {config.data.calib!r}, "
            f"split {config.data.split} -> {reg_part.shape[0]} regularization / {rec_part.shape[0]} recovery")

    eval_ids = None
    evaluation: dict = {}
    if config.evaluate.enabled:
        eval_ids = tokenize_once(tokenizer, evaluation_text(config.evaluate.source))
        max_windows = None
        if config.evaluate.max_tokens:
            max_windows = max(1, config.evaluate.max_tokens // config.evaluate.seq_len)

        def held_out_ppl(m, windows=max_windows):
            return perplexity(m, eval_ids, config.evaluate.seq_len, config.evaluate.batch_size, max_windows=windows)

        with clock.stage("evaluate dense", log):
            evaluation["dense"] = held_out_ppl(model).__dict__

    ctx = PruneContext(
        model=model, tokenizer=tokenizer, config=config, reg_part=reg_part, rec_part=rec_part,
        device=device, bf16=bf16, work_dir=work_dir, resume=resume, clock=clock, log=log,
        held_out_loss=(lambda m: held_out_ppl(m, PRUNE_GAP_WINDOWS).nll_mean) if eval_ids is not None else None,
    )
    outcome = method_function(config.method)(ctx)
    model = outcome.model
    report: dict = dict(outcome.report)

    if config.recovery.enabled and config.recovery.steps > 0:
        from dress.recovery import recover_with_lora

        with clock.stage("recover (LoRA)", log):
            model, history = recover_with_lora(
                model, rec_part, config.recovery, seed=config.seed, bf16=bf16,
                checkpoint_dir=work_dir / "recovery", resume=resume,
            )
        report["recovery"] = history.as_dict()

    if eval_ids is not None:
        with clock.stage("evaluate pruned", log):
            evaluation["pruned"] = held_out_ppl(model).__dict__

    record = {
        "dress_version": __version__,
        "source_model": loaded.source,
        "model_type": model.config.model_type,
        "method": config.method,
        "ratio": config.ratio,
        "loader": "transformers" if adapter.stock_after_prune else "dress",
        **outcome.record,
        "parameters": {"before": params_dense, "after": parameter_count(model)},
        "config": config.model_dump(),
        "report": report,
        "evaluation": {"held_out": evaluation, "source": config.evaluate.source} if evaluation else {},
        "stages": clock.stages,
        "versions": _versions(),
        "device": str(device),
    }
    model = model.to("cpu")
    save_model(model, tokenizer, out, record, overwrite=overwrite or resume)
    clear_checkpoint(work_dir)
    return record


def _versions() -> dict[str, str]:
    import transformers

    versions = {"dress": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    return versions
