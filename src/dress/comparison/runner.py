"""Running a comparison: :func:`run_compare` prunes and evaluates every entry of a plan into a folder.

Contract of :func:`run_compare`:

* **Same data.** The model is loaded once; every entry gets a fresh copy of the dense model and the
  calibration windows drawn once per data block (:func:`dress.data.draw_key`: ``data.calib/samples/
  seq_len/seed``; entries that differ only in ``data.split`` share the windows and split them
  differently).
* **Same evaluation.** Held-out perplexity (and, if asked, zero-shot accuracy and speed against the
  dense model) is measured identically for every entry; the dense model is evaluated once, in the
  same run. Entries may not change ``model``, ``device``, ``bf16`` or the ``evaluate`` block.
* **Resume.** ``results.json`` is rewritten after every finished entry; a rerun skips the entries
  (and the dense row) whose fingerprint matches (:mod:`dress.comparison.store`), and interrupted
  training stages resume from ``<out>/.work/<entry>/``.
* Unknown or unregistered methods are refused before anything runs. A method that cannot prune
  this model (SliceGPT on Gemma3) gets a "not applicable" row with the reason; the others run.

Outputs, written after every entry: ``results.json``, ``results.md`` and PNG plots
(:mod:`dress.comparison.report`).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dress.comparison.planning import Entry, plan
from dress.comparison.spec import CompareConfig, ZeroShotSettings
from dress.comparison.store import (RESULTS_JSON, dense_done, dense_fingerprint, entry_done, entry_fingerprint,
                                    fingerprint, load_results, save_results)
from dress.comparison.report import write_outputs
from dress.data import check_text_source, draw_calibration, draw_key, split_calibration
from dress.evaluation.bench import BenchSettings, benchmark
from dress.evaluation.zeroshot import zeroshot
from dress.io.record import slug
from dress.io.saving import save_model
from dress.methods import get as get_method
from dress.pipeline import Run, prepare, prune_prepared
from dress.training.distributed import Runtime
from dress.training.loop import clear_checkpoint

log = logging.getLogger("dress.compare")  # shown as "[dress compare]"


def run_compare(spec: CompareConfig, out: Path) -> dict:
    """Run (or resume) the comparison into ``out``; returns the results dict (see module doc)."""
    entries = plan(spec)
    for calib in sorted({entry.config.data.calib for entry in entries}):
        check_text_source(calib)  # a typo fails now, not after the dense model is evaluated
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(out / RESULTS_JSON)
    settings = {"zeroshot": spec.zeroshot, "speed": spec.speed}
    todo = [e for e in entries if not entry_done(results, e, settings)]
    log.info(f"{len(entries)} entries, {len(entries) - len(todo)} already done in {out / RESULTS_JSON}")
    results["spec"] = spec.model_dump()
    results["order"] = [e.key for e in entries]
    if not todo and dense_done(results, entries[0].config, settings):
        write_outputs(results, out)
        return results

    # every entry runs with the config `dress prune` would run it with (the preset applied, bf16 on this
    # device, the memory check): the same resolution, before the model loads; fingerprints stay those
    # of the configs as written, so a resumed comparison recognises its entries
    runs = {e.key: Run.resolve(e.config, Runtime()) for e in entries}
    first = runs[entries[0].key].config
    clock = runs[entries[0].key].clock
    dense_is_done = dense_done(results, entries[0].config, settings)
    prepared = prepare(first, clock, need_data=False, check_method=False,
                       dense_evaluation=results["dense"].get("eval") if dense_is_done else None)
    todo = _mark_not_applicable(todo, prepared.model, results, settings)
    save_results(results, out)
    prepared.model.to("cpu")  # the pristine dense copy; each entry works on a deep copy on the device
    if not dense_is_done:
        results["dense"] = _evaluate_dense(prepared, first, spec, settings)
        save_results(results, out)
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
            save_model(model.to("cpu"), prepared.tokenizer, out / "models" / slug(entry.key), record, overwrite=True)
        if spec.speed:  # last: it may cast the pruned model
            result["speed"] = _speed(model, prepared)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        results.setdefault("entries", {})[entry.key] = result
        save_results(results, out)
        write_outputs(results, out)
        clear_checkpoint(work)
        del model
        log.info(f"{entry.key}: ppl {result.get('ppl')} ({result['seconds']:.0f} s)")
    write_outputs(results, out)
    return results


def _mark_not_applicable(todo: list[Entry], model, results: dict, settings: dict) -> list[Entry]:
    """Record a "not applicable" row for every entry whose method cannot prune ``model``; returns
    the entries left to run."""
    runnable = []
    for entry in todo:
        refusal = get_method(entry.config.method).refusal(model)
        if refusal is None:
            runnable.append(entry)
            continue
        log.warning(f"{entry.key}: {refusal}; its row says not applicable")
        results.setdefault("entries", {})[entry.key] = {
            "key": entry.key, "label": entry.label, "method": entry.config.method, "ratio": entry.ratio,
            "sweep": entry.point, "fingerprint": entry_fingerprint(entry, settings), "not_applicable": refusal,
        }
    return runnable


def _evaluate_dense(prepared, config, spec: CompareConfig, settings: dict) -> dict:
    """The dense row: perplexity measured by :func:`dress.pipeline.prepare`, zero-shot here."""
    dense: dict[str, Any] = {
        "params": prepared.params_dense,
        "fingerprint": dense_fingerprint(config, settings),
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
    log.info(f"zero-shot: {', '.join(zs.tasks)} (limit {zs.limit})")
    return zeroshot(model, tokenizer, zs.tasks, limit=zs.limit, batch_size=zs.batch_size, source=zs.source).to_dict()


def _speed(model, prepared) -> dict:
    """Pruned against dense in the dtype ``dress bench`` uses on this device (bf16 on a GPU, fp32 on
    CPU): the pruned model is cast in place, the dense one timed as a cast copy (the pristine fp32
    dense model stays on the host)."""
    import torch

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
        "fingerprint": entry_fingerprint(entry, settings),
        "params": record["parameters"]["after"],
        "params_dense": record["parameters"]["before"],
        "ppl": pruned.get("ppl"),
        "nll": pruned.get("nll_mean"),
        "prune_gap_nats": report.get("prune_gap_nats"),
        "preserved_ratio": report.get("regularization", {}).get("preserved_ratio"),
        "record": record,
    }
