"""``dress compare``: several pruning methods on one model, one calibration draw, one evaluation.

A comparison is a :class:`CompareConfig`: a base :class:`~dress.config.PruneConfig` (as a partial
dict), the *variants* to run (a method plus config overrides, under a label), the ratios, and
optional *sweeps* (a config field and its values). Every (variant, ratio, sweep point) is an
*entry*, keyed ``label@ratio`` plus ``[field=value,...]`` for sweep points.

Contract of :func:`run_compare`:

* **Same data.** The model is loaded once; every entry gets a fresh copy of the dense model and the
  calibration windows drawn once per data block (``data.calib/samples/seq_len/seed``; entries that
  differ only in ``data.split`` share the windows and split them differently).
* **Same evaluation.** Held-out perplexity (and, if asked, zero-shot accuracy and speed against the
  dense model) is measured identically for every entry; the dense model is evaluated once, in the
  same run. Entries may not change ``model``, ``device``, ``bf16`` or the ``evaluate`` block.
* **Resume.** ``results.json`` in the output folder is rewritten atomically after every finished
  entry. A rerun skips each entry whose stored fingerprint (resolved config, zero-shot and speed
  settings) matches, and recomputes the others; interrupted training stages resume from
  ``<out>/.work/<entry>/``.
* Unknown or unregistered methods are refused before anything runs. A method that cannot prune
  this model (SliceGPT on Gemma3) gets a "not applicable" row with the reason; the others run.

Outputs, written after every entry: ``results.json``, ``results.md`` (:mod:`dress.comparison.report`)
and PNG plots (:mod:`dress.comparison.report`).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from dress.config import expand_dotted, merge_trees as _merge
from dress.config_base import StrictConfig

from dress.errors import DressError
from dress.io.record import slug, write_json_atomic
from dress.resume import digest

log = logging.getLogger("dress.compare")  # shown as "[dress compare]"
RESULTS_JSON = "results.json"
FORMAT_VERSION = 1

# Fields every entry must share (the same model and the same evaluation for all).
_SHARED_PREFIXES = ("model", "device", "bf16", "evaluate")


class Variant(StrictConfig):
    """One line of the table: ``method`` with dotted-field overrides, shown as ``label``."""

    label: str
    method: str
    set: dict[str, Any] = {}


class ZeroShotSettings(StrictConfig):
    enabled: bool = False
    tasks: list[str] = ["piqa", "winogrande", "hellaswag", "arc_easy", "arc_challenge"]
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    source: str = "auto"
    # Score only these variants' rows (None: every row; the dense row always). Zero-shot is the
    # expensive part of an entry on a CPU: a second calibration draw can be scored for perplexity only.
    labels: list[str] | None = None

    def scores(self, label: str) -> bool:
        return self.enabled and (self.labels is None or label in self.labels)

    def protocol(self) -> dict:
        """What decides the scores (not which rows get them): part of every fingerprint."""
        return self.model_dump(exclude={"labels"})


class CompareConfig(StrictConfig):
    """A whole comparison (the experiment files in ``experiments/`` are this, as YAML/JSON)."""

    base: dict[str, Any] = {}  # partial PruneConfig (dotted keys allowed)
    variants: list[Variant] = []
    ratios: list[float] = [0.25]
    sweep: dict[str, list[Any]] = {}  # dotted field -> values (a product over fields)
    zeroshot: ZeroShotSettings = ZeroShotSettings()
    speed: bool = False
    save_models: bool = False


def variant_from_name(name: str) -> Variant:
    """A method name (``dress``, ``slicegpt``, ...) or a registered alias (``dress-l1``, ...)."""
    from dress.methods import aliases

    if name in aliases():
        method, overrides = aliases()[name]
        return Variant(label=name, method=method, set=dict(overrides))
    return Variant(label=name, method=name)


def check_methods(variants: list[Variant]) -> None:
    """Refuse unknown methods before any work starts."""
    from dress.methods import aliases, methods

    for v in variants:
        if v.method not in methods():
            raise DressError(
                f"unknown method {v.method!r} (variant {v.label!r}); methods: {', '.join(methods())}; "
                f"aliases: {', '.join(aliases())}"
            )


@dataclass(frozen=True)
class Entry:
    key: str
    label: str
    ratio: float
    point: dict[str, Any]  # sweep values of this entry
    config: Any  # PruneConfig


def plan(spec: CompareConfig) -> list[Entry]:
    """Every entry of the comparison, validated, in run order (ratio, then variant, then sweep)."""
    from dress.config import validate_config

    if not spec.variants:
        raise DressError("nothing to compare: give --methods (e.g. dress,direct,slicegpt) or variants in --config")
    if not spec.ratios:
        raise DressError("give at least one ratio (--ratios 0.25)")
    check_methods(spec.variants)
    for field in spec.sweep:
        if field.startswith(_SHARED_PREFIXES) or field in ("method", "ratio"):
            raise DressError(f"cannot sweep {field}: every entry shares the model, device and evaluation "
                             "(methods and ratios have their own options)")
    labels = [v.label for v in spec.variants]
    if len(set(labels)) != len(labels):
        raise DressError(f"variant labels must be unique, got {labels}")
    unknown = [label for label in spec.zeroshot.labels or [] if label not in labels]
    if unknown:
        raise DressError(f"zeroshot.labels names no variant: {unknown}; variants: {labels}")
    base = expand_dotted(spec.base)
    points = [dict(zip(spec.sweep, values)) for values in itertools.product(*spec.sweep.values())] or [{}]
    entries = []
    for ratio in spec.ratios:
        for variant in spec.variants:
            for point in points:
                tree = _merge(copy.deepcopy(base), expand_dotted(variant.set))
                tree = _merge(tree, expand_dotted(point))
                tree["method"], tree["ratio"] = variant.method, ratio
                config = validate_config(tree, where=f" (variant {variant.label!r})")
                suffix = "[" + ",".join(f"{k}={v}" for k, v in point.items()) + "]" if point else ""
                entries.append(Entry(f"{variant.label}@{ratio:g}{suffix}", variant.label, ratio, point, config))
    shared = {_shared(e.config) for e in entries}
    if len(shared) > 1:
        raise DressError("variants may not change model, device, bf16 or evaluate.*: every method gets the same evaluation")
    return entries


def _shared(config) -> str:
    dump = config.model_dump()
    return json.dumps({k: dump[k] for k in _SHARED_PREFIXES}, sort_keys=True, default=str)


fingerprint = digest  # one canonical hash for compare's entries and prune's checkpoints (dress.resume)


# ---- running -------------------------------------------------------------------------------
def run_compare(spec: CompareConfig, out: Path) -> dict:
    """Run (or resume) the comparison into ``out``; returns the results dict (see module doc)."""
    from dress.comparison.report import write_outputs
    from dress.data import check_text_source, draw_calibration, draw_key, split_calibration
    from dress.pipeline import Run, prepare, prune_prepared
    from dress.training.distributed import Runtime

    entries = plan(spec)
    for calib in sorted({entry.config.data.calib for entry in entries}):
        check_text_source(calib)  # a typo fails now, not after the dense model is evaluated
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = _load_results(out / RESULTS_JSON)
    settings = {"zeroshot": spec.zeroshot, "speed": spec.speed}
    todo = [e for e in entries if not _is_done(results, e, settings)]
    log.info(f"{len(entries)} entries, {len(entries) - len(todo)} already done in {out / RESULTS_JSON}")
    results["spec"] = spec.model_dump()
    results["order"] = [e.key for e in entries]
    if not todo and _dense_done(results, entries[0].config, settings):
        write_outputs(results, out)
        return results

    # every entry runs with the config `dress prune` would run it with (the preset applied, bf16 on this
    # device, the memory check): the same resolution, before the model loads; fingerprints stay those
    # of the configs as written, so a resumed comparison recognises its entries
    runs = {e.key: Run.resolve(e.config, Runtime()) for e in entries}
    first = runs[entries[0].key].config
    clock = runs[entries[0].key].clock
    dense_done = _dense_done(results, entries[0].config, settings)
    prepared = prepare(first, clock, need_data=False, check_method=False,
                       dense_evaluation=results["dense"].get("eval") if dense_done else None)
    todo = _mark_not_applicable(todo, prepared.model, results, settings)
    _save(results, out)
    prepared.model.to("cpu")  # the pristine dense copy; each entry works on a deep copy on the device
    if not dense_done:
        results["dense"] = _evaluate_dense(prepared, first, spec, settings)
        _save(results, out)
    draws: dict[tuple, Any] = {}
    for entry in todo:
        run = runs[entry.key]
        config = run.config
        t0 = time.perf_counter()
        log.info(f"=== {entry.key} ===")
        if draw_key(config.data) not in draws:
            draws[draw_key(config.data)] = samples = draw_calibration(prepared.tokenizer, config.data)
            log.info(f"calibration: {samples.shape[0]} x {samples.shape[1]} tokens from {config.data.calib!r} "
                f"(seed {config.data.seed}), shared by every entry with this data block")
        reg, rec = split_calibration(draws[draw_key(config.data)], config.data)
        entry_prepared = replace(prepared, reg_part=reg, rec_part=rec)
        model = copy.deepcopy(prepared.model).to(prepared.device)
        work = out / ".work" / slug(entry.key + "-" + fingerprint(config.model_dump()))
        model, record = prune_prepared(config, entry_prepared, model, work, resume=True, clock=run.clock)
        result = _entry_result(entry, record, settings)
        if spec.zeroshot.scores(entry.label):
            result["zeroshot"] = _zeroshot(model, prepared.tokenizer, spec.zeroshot)
        if spec.save_models:
            from dress.io.saving import save_model

            save_model(model.to("cpu"), prepared.tokenizer, out / "models" / slug(entry.key), record, overwrite=True)
        if spec.speed:  # last: it may cast the pruned model
            result["speed"] = _speed(model, prepared)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        results.setdefault("entries", {})[entry.key] = result
        _save(results, out)
        write_outputs(results, out)
        from dress.training.loop import clear_checkpoint

        clear_checkpoint(work)
        del model
        log.info(f"{entry.key}: ppl {result.get('ppl')} ({result['seconds']:.0f} s)")
    write_outputs(results, out)
    return results


def _mark_not_applicable(todo: list[Entry], model, results: dict, settings: dict) -> list[Entry]:
    """Record a "not applicable" row for every entry whose method cannot prune ``model``; returns
    the entries left to run."""
    from dress.methods import get as get_method

    runnable = []
    for entry in todo:
        refusal = get_method(entry.config.method).refusal(model)
        if refusal is None:
            runnable.append(entry)
            continue
        log.warning(f"{entry.key}: {refusal}; its row says not applicable")
        results.setdefault("entries", {})[entry.key] = {
            "key": entry.key, "label": entry.label, "method": entry.config.method, "ratio": entry.ratio,
            "sweep": entry.point, "fingerprint": _entry_fingerprint(entry, settings), "not_applicable": refusal,
        }
    return runnable


def _evaluate_dense(prepared, config, spec: CompareConfig, settings: dict) -> dict:
    """The dense row: perplexity measured by :func:`dress.pipeline.prepare`, zero-shot here."""
    dense: dict[str, Any] = {
        "params": prepared.params_dense,
        "fingerprint": _dense_fingerprint(config, settings),
        "source_model": prepared.source,
        "model_type": prepared.model.config.model_type,
    }
    if "dense" in prepared.evaluation:
        result = prepared.evaluation["dense"]
        dense.update(ppl=result["ppl"], nll=result["nll_mean"], eval=result)
    if spec.zeroshot.enabled:
        model = prepared.model.to(prepared.device)
        dense["zeroshot"] = _zeroshot(model, prepared.tokenizer, spec.zeroshot)
        prepared.model.to("cpu")
    return dense


def _zeroshot(model, tokenizer, zs: ZeroShotSettings) -> dict:
    from dress.evaluation.zeroshot import zeroshot

    log.info(f"zero-shot: {', '.join(zs.tasks)} (limit {zs.limit})")
    return zeroshot(model, tokenizer, zs.tasks, limit=zs.limit, batch_size=zs.batch_size, source=zs.source).to_dict()


def _speed(model, prepared) -> dict:
    """Pruned against dense in the dtype ``dress bench`` uses on this device (bf16 on a GPU, fp32 on
    CPU): the pruned model is cast in place, the dense one timed as a cast copy (the pristine fp32
    dense model stays on the host)."""
    import torch

    from dress.evaluation.bench import BenchSettings, benchmark

    dtype = torch.bfloat16 if prepared.device.type == "cuda" else torch.float32
    log.info(f"speed against the dense model ({str(dtype).removeprefix('torch.')})")
    model = model.to(prepared.device, dtype)
    same_dtype = dtype == torch.float32  # the pristine model is fp32: time it in place, else a cast copy
    dense = (prepared.model if same_dtype else copy.deepcopy(prepared.model)).to(prepared.device, dtype)
    positions = getattr(model.config, "max_position_embeddings", None) or 10**9
    try:
        result = benchmark(model, dense, BenchSettings.defaults(prepared.device).within(positions),
                           device=prepared.device, progress=False)
    finally:
        prepared.model.to("cpu")
    return {"ratios": result["ratios"], "settings": result["settings"], "environment": result["environment"]}


def _entry_result(entry: Entry, record: dict, settings: dict) -> dict:
    held = record.get("evaluation", {}).get("held_out", {})
    pruned = held.get("pruned") or {}
    report = record.get("report", {})
    return {
        "key": entry.key,
        "label": entry.label,
        "method": entry.config.method,
        "ratio": entry.ratio,
        "sweep": entry.point,
        "fingerprint": _entry_fingerprint(entry, settings),
        "params": record["parameters"]["after"],
        "params_dense": record["parameters"]["before"],
        "ppl": pruned.get("ppl"),
        "nll": pruned.get("nll_mean"),
        "prune_gap_nats": report.get("prune_gap_nats"),
        "preserved_ratio": report.get("regularization", {}).get("preserved_ratio"),
        "record": record,
    }


def _entry_fingerprint(entry: Entry, settings: dict) -> str:
    zs: ZeroShotSettings = settings["zeroshot"]
    scored = zs.protocol() if zs.scores(entry.label) else ZeroShotSettings().protocol()  # unscored: as if off
    return fingerprint({"config": entry.config.model_dump(), "zeroshot": scored, "speed": settings["speed"],
                        "format": FORMAT_VERSION})


def _dense_fingerprint(config, settings: dict) -> str:
    dump = config.model_dump()
    return fingerprint({"model": dump["model"], "evaluate": dump["evaluate"], "device": dump["device"],
                        "zeroshot": settings["zeroshot"].protocol(), "format": FORMAT_VERSION})


def _is_done(results: dict, entry: Entry, settings: dict) -> bool:
    stored = results.get("entries", {}).get(entry.key)
    return bool(stored) and stored.get("fingerprint") == _entry_fingerprint(entry, settings)


def _dense_done(results: dict, config, settings: dict) -> bool:
    return results.get("dense", {}).get("fingerprint") == _dense_fingerprint(config, settings)


def _load_results(path: Path) -> dict:
    if not path.is_file():
        return {"format": FORMAT_VERSION, "entries": {}}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DressError(f"{path} is not valid JSON ({err}); move it away to start over") from None
    if results.get("format") != FORMAT_VERSION:
        raise DressError(f"{path} was written by another version of dress compare; move it away to start over")
    return results


def _save(results: dict, out: Path) -> None:
    write_json_atomic(out / RESULTS_JSON, results)
