"""Speed of a pruned model against its dense original, SLEB's protocol (the paper's Table 2).

Two measurements, both models in one process, interleaved (dense, pruned, dense, pruned, ...) so
slow drift of the machine (thermal, other load) hits both alike:

- **prefill latency**: one forward pass over a batch-1 prompt of ``prompt_len`` random tokens
  (``use_cache=False``, logits at every position), wall time.
- **generation throughput**: ``model.generate`` on ``gen_batch`` prompts of ``gen_prompt_len``
  random tokens, greedy, exactly ``new_tokens`` new tokens (``min_new_tokens = max_new_tokens``, so
  EOS cannot end it early), KV cache on; throughput = ``gen_batch * new_tokens / wall time``
  (the short prompt's prefill is included in the time).

Paper sizes (GPU default): prompt 2048; batch 64 x 128 new tokens. CPU default: prompt 512;
batch 8 x 32 new tokens; every report states the sizes it used. Each measurement is warmed up
``warmup`` times, then repeated ``repeats`` times; the median is reported with min and max.
On CUDA the device is synchronised before reading each clock.

Memory: ``weight_bytes`` (parameters and buffers as loaded), ``peak_working_bytes`` (the most
memory a run added above what was in use when it started: CUDA allocated memory on GPU, process
RSS sampled every 2 ms on CPU) and ``peak_process_bytes`` (absolute peak; both models are
resident, so this is shared).

Ratios: ``prefill_speedup = dense latency / pruned latency``; ``generation_speedup = pruned
throughput / dense throughput`` (medians). The ideal speedup of removing a fraction
``r = 1 - params_pruned / params_dense`` of the parameters is ``1 / (1 - r)``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from dress.adapters import parameter_count
from dress.errors import DressError
from dress.io.saving import weights_on_disk
from dress.logs import progress as progress_bar
from dress.memory_meter import StagePeak


@dataclass(frozen=True)
class BenchSettings:
    """Sizes and repetitions of one benchmark; :meth:`defaults` picks them per device."""

    prompt_len: int
    gen_batch: int
    gen_prompt_len: int
    new_tokens: int
    repeats: int
    warmup: int
    seed: int = 0

    @classmethod
    def defaults(cls, device: str | torch.device) -> BenchSettings:
        if torch.device(device).type == "cuda":
            return cls(prompt_len=2048, gen_batch=64, gen_prompt_len=32, new_tokens=128, repeats=10, warmup=2)
        return cls(prompt_len=512, gen_batch=8, gen_prompt_len=32, new_tokens=32, repeats=5, warmup=1)

    def within(self, max_positions: int) -> BenchSettings:
        """These sizes, shortened where a model's context is smaller (prompt, then new tokens)."""
        from dataclasses import replace

        new_tokens = min(self.new_tokens, max(1, max_positions // 2))
        return replace(self, prompt_len=min(self.prompt_len, max_positions), new_tokens=new_tokens,
                       gen_prompt_len=min(self.gen_prompt_len, max_positions - new_tokens))

    def validate(self) -> None:
        for name in ("prompt_len", "gen_batch", "gen_prompt_len", "new_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise DressError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise DressError(f"--warmup must be at least 0, got {self.warmup}")


@dataclass
class Timing:
    """Wall-clock samples (seconds) of one measurement, warm-ups excluded."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def summary(self, work: float | None = None) -> dict:
        """Median/min/max seconds; with ``work`` (e.g. tokens) also ``work / seconds`` for each."""
        out = {"median_s": self.median, "min_s": min(self.samples), "max_s": max(self.samples), "samples_s": list(self.samples)}
        if work is not None:
            out |= {
                "per_s_median": work / self.median,
                "per_s_min": work / max(self.samples),
                "per_s_max": work / min(self.samples),
            }
        return out


# ---------------------------------------------------------------- pure facts and arithmetic
def weight_bytes(model: nn.Module) -> int:
    """Bytes of the distinct parameters and buffers as they sit in memory."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def ideal_speedup(params_dense: int, params_pruned: int) -> float:
    """``1 / (1 - r)`` with ``r = 1 - params_pruned / params_dense``, i.e. ``params_dense / params_pruned``."""
    if params_pruned <= 0 or params_dense <= 0:
        raise ValueError("parameter counts must be positive")
    return params_dense / params_pruned


def speed_ratios(
    *, params_dense: int, params_pruned: int, prefill_dense_s: float, prefill_pruned_s: float,
    generate_dense_s: float, generate_pruned_s: float,
) -> dict:
    """Speedups of pruned over dense from median times of the *same* work, and the ideal.

    ``prefill_speedup = dense latency / pruned latency``; ``generation_speedup = pruned throughput
    / dense throughput``, which for the same number of tokens is ``dense time / pruned time``.
    ``*_of_ideal`` is the speedup divided by :func:`ideal_speedup`.
    """
    ideal = ideal_speedup(params_dense, params_pruned)
    prefill = prefill_dense_s / prefill_pruned_s
    generation = generate_dense_s / generate_pruned_s
    return {
        "param_fraction_removed": 1.0 - params_pruned / params_dense,
        "ideal_speedup": ideal,
        "prefill_speedup": prefill,
        "generation_speedup": generation,
        "prefill_of_ideal": prefill / ideal,
        "generation_of_ideal": generation / ideal,
    }


# ---------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _ModelRuns:
    name: str
    model: nn.Module
    prefill: Timing = field(default_factory=Timing)
    generate: Timing = field(default_factory=Timing)
    peak_working_bytes: int = 0
    peak_process_bytes: int = 0


def _generation_config(model: nn.Module, new_tokens: int):
    from transformers import GenerationConfig

    eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        pad = eos[0] if isinstance(eos, list) else (eos if eos is not None else 0)
    return GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        eos_token_id=eos, pad_token_id=pad, use_cache=True,
    )


def _time_once(run: _ModelRuns, fn, device: torch.device) -> float:
    with StagePeak(device) as mem:
        _sync(device)
        t0 = time.perf_counter()
        fn(run.model)
        _sync(device)
        elapsed = time.perf_counter() - t0
    run.peak_working_bytes = max(run.peak_working_bytes, mem.added)
    run.peak_process_bytes = max(run.peak_process_bytes, mem.peak)
    return elapsed


def _interleaved(runs: list[_ModelRuns], fn, timing_of, settings: BenchSettings, device: torch.device, progress) -> None:
    for i in range(settings.warmup + settings.repeats):
        for run in runs:  # A, B, A, B, ...
            elapsed = _time_once(run, fn, device)
            if i >= settings.warmup:
                timing_of(run).samples.append(elapsed)
            progress.update(1)


def _model_facts(model: nn.Module) -> dict:
    cfg = model.config
    return {
        "params": parameter_count(model),
        "weight_bytes": weight_bytes(model),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
    }


def benchmark(
    pruned: nn.Module,
    dense: nn.Module,
    settings: BenchSettings,
    *,
    device: str | torch.device | None = None,
    pruned_folder: str | Path | None = None,
    dense_folder: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Time ``pruned`` against ``dense`` by the protocol in the module docstring.

    Both models must already be on ``device`` (default: where ``dense``'s parameters are) and share
    a tokenizer's id space (prompts are random ids below the smaller vocabulary). Returns a
    JSON-ready dict: ``settings``, ``environment``, ``models`` (``pruned``/``dense``: facts, timings,
    memory) and ``ratios`` (:func:`speed_ratios`).
    """
    settings.validate()
    device = torch.device(device) if device is not None else next(dense.parameters()).device
    vocab = min(pruned.config.vocab_size, dense.config.vocab_size)
    limit = min(getattr(m.config, "max_position_embeddings", 10**9) or 10**9 for m in (pruned, dense))
    if settings.prompt_len > limit or settings.gen_prompt_len + settings.new_tokens > limit:
        raise DressError(f"benchmark lengths exceed the models' max_position_embeddings ({limit}); use smaller sizes")
    gen = torch.Generator().manual_seed(settings.seed)
    prompt = torch.randint(0, vocab, (1, settings.prompt_len), generator=gen).to(device)
    gen_prompts = torch.randint(0, vocab, (settings.gen_batch, settings.gen_prompt_len), generator=gen).to(device)
    gen_mask = torch.ones_like(gen_prompts)
    expected_len = settings.gen_prompt_len + settings.new_tokens

    def prefill(model: nn.Module) -> None:
        model(input_ids=prompt, use_cache=False)

    def generate(model: nn.Module) -> None:
        out = model.generate(
            input_ids=gen_prompts, attention_mask=gen_mask, generation_config=_generation_config(model, settings.new_tokens)
        )
        if out.shape[1] != expected_len:  # the fixed-length protocol is what makes the timings comparable
            raise RuntimeError(f"generate returned {out.shape[1]} tokens per row, expected {expected_len}")

    runs = [_ModelRuns("dense", dense), _ModelRuns("pruned", pruned)]
    total = 2 * 2 * (settings.warmup + settings.repeats)
    with torch.inference_mode(), progress_bar(total=total, desc="bench", unit="run", disable=not progress) as bar:
        _interleaved(runs, prefill, lambda r: r.prefill, settings, device, bar)
        _interleaved(runs, generate, lambda r: r.generate, settings, device, bar)

    models = {}
    for run, folder in ((runs[1], pruned_folder), (runs[0], dense_folder)):
        models[run.name] = _model_facts(run.model) | {
            "bytes_on_disk": weights_on_disk(folder),
            "prefill": run.prefill.summary(work=settings.prompt_len),
            "generate": run.generate.summary(work=settings.gen_batch * settings.new_tokens),
            "peak_working_bytes": run.peak_working_bytes,
            "peak_process_bytes": run.peak_process_bytes,
        }
    ratios = speed_ratios(
        params_dense=models["dense"]["params"], params_pruned=models["pruned"]["params"],
        prefill_dense_s=runs[0].prefill.median, prefill_pruned_s=runs[1].prefill.median,
        generate_dense_s=runs[0].generate.median, generate_pruned_s=runs[1].generate.median,
    )
    return {"settings": asdict(settings), "environment": environment(device), "models": models, "ratios": ratios}


def environment(device: torch.device) -> dict:
    """What the timings depend on besides the model: device, threads, library versions."""
    import os
    import platform

    import transformers

    env = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["sdpa_flash"] = torch.backends.cuda.flash_sdp_enabled()
        env["sdpa_mem_efficient"] = torch.backends.cuda.mem_efficient_sdp_enabled()
    return env
