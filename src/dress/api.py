"""The Python API: what the CLI does, for a model name or a model already in memory.

::

    import dress
    result = dress.prune("smollm2-135m", method="direct", ratio=0.25, selection="last",
                         **{"recovery.enabled": False, "evaluate.enabled": False})
    result.save("runs/direct-25")          # the folder `dress prune --out` would write
    ppl = dress.evaluate(result.model, result.tokenizer, seq_len=512, max_windows=8).ppl

Settings are :data:`dress.config.PruneConfig` fields: a ``config`` (a ``PruneConfig`` or a dict,
e.g. a ``dress.json``'s ``config`` block) and keyword overrides, dotted for nested fields
(``**{"regularize.lam": 2}``) or as nested dicts (``regularize={"lam": 2}``). Errors are
:class:`dress.DressError` with the same messages the CLI prints.

Each function imports the machinery it runs when it is called (the pipeline, the comparison, the
config schema), so ``import dress`` costs little more than importing torch.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class PruneResult:
    """A pruned model, its tokenizer and the record ``dress.json`` would hold."""

    model: nn.Module
    tokenizer: Any
    record: dict
    save_dtype: torch.dtype | None = None
    """What ``save`` writes by default: like ``dress prune``'s ``save_dtype`` (``source``: a named
    model's checkpoint dtype, or the dtype a model passed in memory had), None: the model's own."""

    def save(self, out: str | Path, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write the model, tokenizer and ``dress.json`` atomically to ``out`` (refused if it exists
        unless ``overwrite``), the weights in ``dtype`` (default: ``save_dtype``). The model in
        memory keeps its dtype (it is moved to the CPU)."""
        from dress.io.saving import save_model

        model = self.model.to("cpu")
        dtype = dtype or self.save_dtype or model.dtype
        record = {**self.record, "saved_dtype": str(dtype).removeprefix("torch.")}
        return save_model(model, self.tokenizer, out, record, overwrite=overwrite, dtype=dtype)


def resolve_config(config=None, model: str | None = None, **settings):
    """A validated ``PruneConfig`` from ``config`` (PruneConfig, dict or None) and overrides."""
    from dress.config import PruneConfig, expand_dotted, merge_trees, validate_config

    tree = config.model_dump() if isinstance(config, PruneConfig) else expand_dotted(dict(config or {}))
    tree = merge_trees(tree, expand_dotted(settings))
    if model is not None:
        tree["model"] = model
    return validate_config(tree)


def prune(
    model: str | nn.Module | None = None,
    config=None,
    *,
    tokenizer=None,
    calibration: str | list[str] | None = None,
    work_dir: str | Path | None = None,
    resume: bool = False,
    **settings,
) -> PruneResult:
    """Prune ``model`` and return the result (nothing is written unless you call ``save``).

    ``model``: a bundled name, a folder or a hub id (loaded here), or an ``nn.Module`` (a
    transformers causal LM of a supported family; changed in place, pass ``tokenizer`` when the
    run reads text). ``calibration``: text (one string or a list of documents) to draw the
    calibration windows from instead of ``config.data.calib``. ``work_dir``: where training
    stages checkpoint (default: a temporary folder, deleted afterwards); with ``resume`` an
    interrupted call continues from it.
    """
    from dress.pipeline import Run
    from dress.training.loop import clear_checkpoint

    module = model if isinstance(model, nn.Module) else None
    cfg = resolve_config(config, None if module is not None else model, **settings)
    saved_as = _save_dtype(cfg, module)
    run = Run.resolve(cfg, in_memory=module is not None)  # the preset, bf16, batch split, memory plan
    cfg, runtime = run.config, run.runtime
    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="dress-work-")) if temporary else Path(work_dir)
    state = None
    if not temporary and module is None and calibration is None:
        # a named model and data: the work folder is fingerprinted like `dress prune`'s (dress.resume)
        from dress.io.loading import resolve_model_path
        from dress.resume import RunState, run_fingerprint

        state = RunState.open(work, run_fingerprint(cfg, *resolve_model_path(cfg.model)), resume,
                              writer=runtime.is_main)
    try:
        pruned, prepared, record = run.execute(state, work, resume, model=module, tokenizer=tokenizer,
                                               calibration=calibration)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    if not temporary:
        clear_checkpoint(work)
    return PruneResult(pruned, prepared.tokenizer, record, saved_as)


def _save_dtype(cfg, module: nn.Module | None) -> torch.dtype | None:
    """``cfg.save_dtype`` resolved before the run (which may change the model's dtype): ``source``
    is the named checkpoint's dtype, or the dtype of the model passed in memory."""
    from dress.io.output import save_dtype

    if module is not None and cfg.save_dtype == "source":
        return module.dtype
    return save_dtype(cfg)


def evaluate(
    model: str | nn.Module | None = None,
    tokenizer=None,
    *,
    text: str = "wiki",
    seq_len: int = 2048,
    batch_size: int = 1,
    max_windows: int | None = None,
    device: str | None = None,
):
    """Held-out perplexity by the paper's protocol (:mod:`dress.evaluation.perplexity`).

    ``model``: a name or folder (loaded with its tokenizer) or an ``nn.Module`` with ``tokenizer``.
    ``text``: a source name (``wiki``, ``books``, ``wikitext2``, a file path). Returns a
    :class:`~dress.evaluation.perplexity.PerplexityResult` (``.ppl``, ``.nll_mean``, windows...)."""
    from dress.data import evaluation_text
    from dress.environment import resolve_device as device_for
    from dress.errors import DressError
    from dress.evaluation.perplexity import perplexity, tokenize_once
    from dress.io.loading import load_model

    eval_text = evaluation_text(text)  # fails fast, before a model loads
    if not isinstance(model, nn.Module):
        loaded = load_model(model)
        model, tokenizer = loaded.model, tokenizer or loaded.tokenizer
    if tokenizer is None:
        raise DressError("evaluate(model=<nn.Module>) needs the model's tokenizer: pass tokenizer=")
    target = device_for(device)
    return perplexity(model.to(target), tokenize_once(tokenizer, eval_text), seq_len, batch_size, target,
                      max_windows=max_windows, progress=False)


def compare(spec, out: str | Path) -> dict:
    """Run (or resume) a comparison (:class:`dress.comparison.CompareConfig` or a dict in the shape of
    the files in ``experiments/``) into ``out``; returns the results (also in ``out/results.json``)."""
    from dress.comparison import CompareConfig, run_compare

    if not isinstance(spec, CompareConfig):
        spec = CompareConfig.model_validate(spec)
    return run_compare(spec, Path(out))
