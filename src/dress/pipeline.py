"""``dress prune`` as a function: load -> calibrate -> (regularize) -> remove -> (recover) ->
evaluate -> save. Every method shares this path; only the middle differs.

:func:`prepare` (load, calibration draw, dense evaluation) and :func:`prune_prepared` (method,
recovery, pruned evaluation, record) are the two halves of :func:`run_prune`; ``dress compare`` runs
many methods on one :class:`Prepared`.

Contract of :func:`run_prune`: the output folder appears only when everything succeeded (it is
assembled in a temporary sibling); an existing output is refused unless ``overwrite``; with
``resume`` the training stages continue from their checkpoints in ``<out>.checkpoints/``, which
is deleted after success. Returns the record written to ``dress.json``.

Under a launcher (``torchrun`` / ``accelerate launch``, see :mod:`dress.training.distributed`) every process
runs this same function on its own full copy of the model; the training stages split each global
batch across the processes (:mod:`dress.training.engine`). Only the main process logs, evaluates
(perplexity, prune gap), writes the output folder and ``dress.json`` and deletes the checkpoints;
the others wait at barriers, so every process returns when the output is complete.
"""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from dress import __version__
from dress.adapters import adapter_for, parameter_count
from dress.config import PruneConfig
from dress.data import draw_calibration, evaluation_text, load_text, split_calibration, text_source
from dress.environment import resolve_device as _resolve_device
from dress.errors import DressError
from dress.evaluation.perplexity import perplexity, tokenize_once
from dress.io.loading import check_supported_architecture, load_model
from dress.io.output import finish_record, save_dtype
from dress.io.saving import save_model
from dress.logs import log, only_main_process
from dress.memory_meter import StagePeak
from dress.methods import get as get_method
from dress.methods.base import PruneContext
from dress.out_of_memory import out_of_memory_error
from dress.pruning.budget import fit_budget
from dress.resume import current_fingerprint, finished_record, recall, running, start_run
from dress.run_setup import resolve_run, run_record
from dress.training.distill import Distillation, frozen_teacher
from dress.training.distributed import Runtime, current_runtime
from dress.training.loop import clear_checkpoint
from dress.training.recovery import recover

PRUNE_GAP_WINDOWS = 8  # held-out windows for the prune gap (loss after removal - before)


class StageClock:
    """Wall time and peak memory per stage (CUDA max-allocated on GPU, process RSS on CPU)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stages: dict[str, dict[str, float]] = {}
        self.current: str | None = None  # the stage running now (named in an out-of-memory error)

    @contextmanager
    def stage(self, name: str):
        """Time the block and measure its own peak memory: on CUDA ``max_memory_allocated`` after
        ``reset_peak_memory_stats`` (torch's allocations, without the CUDA context); on CPU the
        process's RSS sampled by a background thread during the block (:mod:`dress.memory_meter`),
        so each stage records the peak *within* it, not the process's maximum so far."""
        log.info(f"{name} ...")
        self.current = name
        t0 = time.perf_counter()
        with StagePeak(self.device) as meter:
            yield
        seconds = time.perf_counter() - t0
        self.stages[name] = {"seconds": round(seconds, 2), "peak_memory_gib": round(meter.peak / 2**30, 3)}
        self.current = None
        log.info(f"{name}: {seconds:.1f} s")


def resolve_device(config: PruneConfig, runtime: Runtime | None = None) -> torch.device:
    """The device of this process: under a launcher the rank's own (``cuda:LOCAL_RANK`` or cpu)."""
    if runtime is not None and runtime.distributed:
        return runtime.device
    return _resolve_device(config.device)


@dataclass
class Run:
    """One pruning run, assembled once the same way for ``dress prune`` (:func:`run_prune`), the
    Python API (:func:`dress.prune`) and every entry of ``dress compare``: the config as it will run
    (preset applied, bf16 checked for this device, batches adapted to the launch, memory plan checked
    before anything loads), this process's place in a launch, its device, and the clock of its stages."""

    config: PruneConfig
    planned: dict  # dress.run_setup.resolve_run's plan and verdict
    runtime: Runtime
    device: torch.device
    clock: StageClock

    @classmethod
    def resolve(cls, config: PruneConfig, runtime: Runtime | None = None, *, in_memory: bool = False) -> Run:
        """``in_memory``: the model is already loaded (the API given a module): no plan before loading."""
        runtime = runtime or current_runtime(config.device)
        device = resolve_device(config, runtime)
        if in_memory:
            config = config.model_copy(update={"skip_memory_check": True})
        config, planned = resolve_run(config, device, runtime)
        return cls(config, planned, runtime, device, StageClock(device))

    def execute(self, state, work_dir: Path, resume: bool, **inputs) -> tuple[torch.nn.Module, Prepared, dict]:
        """The run between the checks and the writing, shared by ``dress prune`` (:func:`run_prune`)
        and ``dress.prune``: log the memory plan's verdict, then prepare, prune, recover and evaluate
        inside the run ``state`` (:func:`dress.resume.running`). ``inputs``: :func:`prepare`'s
        ``model``, ``tokenizer``, ``calibration``. Returns ``(pruned model, prepared, record)``."""
        for line in self.planned.get("verdict", []):  # after the output and --resume checks, whose refusals come first
            log.info(line)
        with running(state):
            prepared = prepare(self.config, self.clock, runtime=self.runtime, **inputs)
            model, record = prune_prepared(self.config, prepared, prepared.model, work_dir, resume, self.clock)
        record.update(run_record(self.config, self.planned))
        return model, prepared, record


@dataclass
class Prepared:
    """What every method of one run shares (see :func:`prepare`): the dense model and tokenizer,
    the calibration draw, the tokenized held-out text and the dense model's evaluation."""

    model: torch.nn.Module
    tokenizer: object
    source: str  # the model as the user named it
    stock_after_prune: bool
    params_dense: int
    reg_part: torch.Tensor | None
    rec_part: torch.Tensor | None
    eval_ids: torch.Tensor | None
    evaluation: dict  # {"dense": PerplexityResult fields} when evaluation is on
    device: torch.device
    bf16: bool
    runtime: Runtime = Runtime()  # this process in a launch (the local default: one process)
    local_path: Path | None = None  # the model's folder (its tokenizer files are copied when none was loaded)


def method_needs_data(config: PruneConfig) -> bool:
    """Whether the run needs calibration windows: the method reads them, or recovery trains on them."""
    return get_method(config.method).needs_data(config) or config.recovery.enabled


def prepare(
    config: PruneConfig, clock: StageClock | None = None, *, need_data: bool | None = None,
    runtime: Runtime | None = None, model: torch.nn.Module | None = None, tokenizer=None,
    calibration: str | None = None, check_method: bool = True, dense_evaluation: dict | None = None,
) -> Prepared:
    """Load the model, draw the calibration windows (if the method needs them, or ``need_data``)
    and evaluate the dense model. The draw depends only on ``config.data`` and the tokenizer, so
    every method given the same data block sees the same windows. Under a launcher every process
    loads and draws (the main process first, so downloads land once in the shared cache); only the
    main process evaluates.

    ``model``/``tokenizer`` (the Python API): prune this in-memory model instead of loading
    ``config.model``; ``calibration``: draw the windows from this text instead of ``config.data.calib``."""
    runtime = runtime or Runtime()
    device = resolve_device(config, runtime)
    bf16 = config.bf16 if config.bf16 is not None else device.type == "cuda"
    clock = clock or StageClock(device)
    torch.manual_seed(config.seed)
    wants_data = method_needs_data(config) if need_data is None else need_data
    wants_eval = config.evaluate.enabled and runtime.is_main

    # The architecture (from config.json) and the texts are checked before the model loads, so an
    # unsupported model, a typo, a missing file or an offline hub fails in seconds, not after 7B weights load.
    if model is None:
        check_supported_architecture(config.model)
    calib_text = eval_text = None
    if wants_data or wants_eval:
        with clock.stage("read text"), runtime.main_first():
            if wants_data:
                calib_text = load_text(config.data.calib) if calibration is None else text_source(calibration)
            eval_text = evaluation_text(config.evaluate.source) if wants_eval else None

    with clock.stage("load model"), runtime.main_first():
        local_path = None
        if model is None:
            loaded = load_model(config.model, need_tokenizer=wants_data or wants_eval)
            model, tokenizer, source, local_path = loaded.model, loaded.tokenizer, loaded.source, loaded.path
            if device.type == "cpu":
                _own_memory(model)
        else:
            source = config.model or getattr(model.config, "_name_or_path", "") or "in-memory model"
        model = model.to(device)
        adapter = adapter_for(model)
    refusal = get_method(config.method).refusal(model) if check_method else None
    if refusal:
        raise DressError(f"--method {refusal}. Choose another --method (`dress prune --help` lists them).")
    if tokenizer is None and (wants_data or wants_eval):
        raise DressError("this run reads text (calibration or evaluation), so it needs the model's tokenizer; pass tokenizer=")

    reg_part = rec_part = None
    if wants_data:
        with clock.stage("calibration data"):
            samples = draw_calibration(tokenizer, config.data, calib_text)
            reg_part, rec_part = split_calibration(samples, config.data)
        log.info(f"calibration: {samples.shape[0]} x {samples.shape[1]} tokens from {config.data.calib!r}, "
            f"split {config.data.split} -> {reg_part.shape[0]} regularization / {rec_part.shape[0]} recovery")

    eval_ids = None
    evaluation: dict = {}
    if wants_eval:
        eval_ids = tokenize_once(tokenizer, eval_text)
        if dense_evaluation is not None:
            evaluation["dense"] = dense_evaluation
        else:
            with clock.stage("evaluate dense"):
                # recorded by an earlier attempt of this run (--resume) when the evaluation settings match
                evaluation["dense"] = recall("dense_evaluation", config.evaluate.model_dump(),
                                             lambda: _held_out_ppl(config, model, eval_ids).__dict__)
    return Prepared(model, tokenizer, source, adapter.stock_after_prune, parameter_count(model),
                    reg_part, rec_part, eval_ids, evaluation, device, bf16, runtime, local_path)


@torch.no_grad()
def _own_memory(model: torch.nn.Module) -> None:
    """Copy every parameter and buffer out of the checkpoint's memory map. On CPU an
    fp32 safetensors file is mapped, not read: its tensors share one file-backed storage, so pages
    written in training stay resident until the *last* tensor of the file is gone, and removing
    channels held the old and the new model at once. Owned tensors are freed one by one."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                param.data = param.data.clone()
        for name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[name] = buf.clone()


def _held_out_ppl(config: PruneConfig, model, eval_ids, windows: int | None = None):
    if windows is None and config.evaluate.max_tokens:
        windows = max(1, config.evaluate.max_tokens // config.evaluate.seq_len)
    return perplexity(model, eval_ids, config.evaluate.seq_len, config.evaluate.batch_size, max_windows=windows)


def prune_prepared(
    config: PruneConfig, prepared: Prepared, model, work_dir: Path, resume: bool = False,
    clock: StageClock | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Run ``config.method`` (and recovery, and the pruned evaluation) on ``model`` — the dense
    model of ``prepared`` or a copy of it, changed in place. Returns ``(pruned model, record)``."""
    clock = clock or StageClock(prepared.device)
    config, budget = apply_parameter_budget(config, model)
    torch.manual_seed(config.seed)
    eval_ids, bf16 = prepared.eval_ids, prepared.bf16
    distill = _distillation(config, model, bf16)
    ctx = PruneContext(
        model=model, tokenizer=prepared.tokenizer, config=config, reg_part=prepared.reg_part,
        rec_part=prepared.rec_part, device=prepared.device, bf16=bf16, work_dir=work_dir, resume=resume,
        clock=clock, runtime=prepared.runtime, distill=distill,
        held_out_loss=(
            (lambda m: _held_out_ppl(config, m, eval_ids, PRUNE_GAP_WINDOWS).nll_mean) if eval_ids is not None else None
        ),
    )
    outcome = get_method(config.method).function()(ctx)
    model = outcome.model
    report: dict = dict(outcome.report)

    if config.recovery.enabled and config.recovery.steps > 0:
        with clock.stage(f"recover ({config.recovery.mode})"):
            model, history = recover(
                model, prepared.rec_part, config.recovery, seed=config.seed, bf16=bf16,
                checkpoint_dir=work_dir / "recovery", resume=resume, distill=distill,
                keep_zero_structures=outcome.keep_zero_structures,
            )
        report["recovery"] = history.as_dict()
    del ctx, distill  # free the teacher before evaluating

    evaluation = dict(prepared.evaluation)
    if eval_ids is not None:
        with clock.stage("evaluate pruned"):
            evaluation["pruned"] = _held_out_ppl(config, model, eval_ids).__dict__

    record = {
        "dress_version": __version__,
        "source_model": prepared.source,
        "model_type": model.config.model_type,
        "method": config.method,
        "ratio": config.ratio,
        "loader": "transformers" if prepared.stock_after_prune else "dress",
        **outcome.record,
        "parameters": {"before": prepared.params_dense, "after": parameter_count(model)},
        **({"parameter_budget": budget.as_record()} if budget else {}),
        "config": config.model_dump(),
        "report": report,
        "evaluation": {"held_out": evaluation, "source": config.evaluate.source} if evaluation else {},
        "stages": clock.stages,
        "versions": _versions(),
        "device": str(prepared.device),
    }
    if prepared.runtime.distributed:
        record["launch"] = {"engine": prepared.runtime.engine, "processes": prepared.runtime.world}
    return model, record


def apply_parameter_budget(config: PruneConfig, model) -> tuple[PruneConfig, object]:
    """With ``ratio_of: params``, the config whose ``ratio`` makes the method's output that fits the
    parameter budget best (:mod:`dress.pruning.budget`), as the method's own knob (``ratio_of: method``,
    so the recorded config repeats the run exactly), and the :class:`ParameterBudget`; else
    ``(config, None)``."""
    if config.ratio_of != "params":
        return config, None
    budget = fit_budget(get_method(config.method).output_shapes(model, config), parameter_count(model), config.ratio)
    log.info(budget.describe())
    return config.model_copy(update={"ratio": budget.shape.ratio, "ratio_of": "method"}), budget


def _distillation(config: PruneConfig, model, bf16: bool = False):
    """The dense teacher (a frozen copy of ``model`` before the method touches it, in bf16 under
    ``--bf16``) when ``config.distill.weight > 0``, else None."""
    if config.distill.weight <= 0:
        return None
    teacher = frozen_teacher(model, torch.bfloat16 if bf16 else None)
    return Distillation(teacher, config.distill.weight, config.distill.temperature)


def run_prune(config: PruneConfig, out: Path, overwrite: bool = False, resume: bool = False) -> dict:
    """See the module docstring; what ``resume`` accepts and refuses is :func:`dress.resume.start_run`."""
    out = Path(out)
    runtime = current_runtime(config.device)
    only_main_process(runtime.is_main)
    work_dir = out.with_name(f"{out.name}.checkpoints")
    run = Run.resolve(config, runtime)
    config = run.config
    if resume and not overwrite and (done := finished_record(config, out)) is not None:
        log.info(f"{out} is already finished with these settings (--resume after the output was in place): "
                 "nothing to do")
        return done
    state = start_run(config, out, work_dir, overwrite=overwrite, resume=resume, runtime=runtime)
    try:
        model, prepared, record = run.execute(state, work_dir, resume)
    except torch.OutOfMemoryError as err:
        raise out_of_memory_error(err, run.clock.current, config, run.device, runtime, work_dir) from None
    if runtime.is_main:
        dtype = save_dtype(config)
        model = model.to("cpu").to(dtype)  # in the source checkpoint's dtype unless --save-dtype says otherwise
        record["saved_dtype"] = str(dtype).removeprefix("torch.")
        record["run_fingerprint"] = current_fingerprint(config)  # a --resume retry of a finished run checks it
        save_model(model, prepared.tokenizer, out, record, overwrite=overwrite or resume,
                   tokenizer_source=prepared.local_path)
        finish_record(record, out, config)
        clear_checkpoint(work_dir)
    runtime.barrier()  # the output is complete when any process returns
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
