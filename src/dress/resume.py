"""Resumable runs: what a run's weights depend on (its *fingerprint*) and the work it has already
recorded (dense evaluation, channel choice), kept in ``<out>.checkpoints/run.json``.

Contract:

* :func:`digest` is the one canonical hash of a JSON-able object (sorted keys); ``dress compare``
  keys its entries with it as well.
* :func:`run_fingerprint` lists everything that determines the weights of ``dress prune``: the
  model's identity (as named, plus the SHA-256 of its ``config.json`` and the names and sizes of
  its weight files, or a hub revision), every setting of the resolved config except those that
  cannot change a weight (evaluation, checkpoint interval, gradient checkpointing), the SHA-256 of
  a local calibration file, and the dress version. The channels (or layers) chosen are added by
  :meth:`RunState.recall` as soon as they are known.
* :meth:`RunState.open` refuses, with the list of differences, to resume a work folder whose
  fingerprint differs from this run's; every training checkpoint records the fingerprint as well
  (:mod:`dress.training.checkpoint`) and is checked the same way when it is loaded.
* :meth:`RunState.recall` returns a value recorded by an earlier attempt of the same run (e.g.
  the dense perplexity) when its parameters match, and computes and records it otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dress.errors import DressError
from dress.training.run_identity import active_run, check_same_run, differences, running  # noqa: F401 (re-exported)
from dress import __version__
from dress.io.loading import resolve_model_path
from dress.io.record import _jsonable, write_json_atomic
from dress.io.saving import check_output_dir, remove_stale_partials
from dress.training.distributed import Runtime

RUN_JSON = "run.json"
FORMAT = 1
# Settings that cannot change a weight: a resume may change them freely. A block name drops the
# block; a leaf name drops that field from every block (each training stage has both).
_NOT_WEIGHTS_BLOCKS = ("evaluate",)
_NOT_WEIGHTS_FIELDS = ("checkpoint_every", "gradient_checkpointing")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def _json_or_empty(path: Path) -> dict:
    """``path`` as JSON, or ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def digest(obj: Any) -> str:
    """16 hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted keys; unknown types as str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_identity(source: str, path: Path | None) -> dict:
    """What names the model's weights: a local (or bundled) folder by its config and weight files,
    a hub id by the revision in the local cache (if it was fetched already)."""
    identity: dict[str, Any] = {"source": source}
    if path is not None:
        path = Path(path)
        if (path / "config.json").is_file():
            identity["config_sha256"] = file_sha256(path / "config.json")
        identity["weights"] = {
            f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)
        }
        return identity
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
    except Exception:  # noqa: BLE001 - a cache we cannot read just means "not known yet"
        cached = None
    if isinstance(cached, str):
        identity["revision"] = Path(cached).parent.name  # .../snapshots/<commit>/config.json
        identity["config_sha256"] = file_sha256(Path(cached))
    return identity


def weight_settings(config) -> dict:
    """The resolved config without the fields that cannot change a weight (and without ``model``,
    which :func:`model_identity` covers)."""
    dump = config.model_dump()
    dump.pop("model", None)
    for block in _NOT_WEIGHTS_BLOCKS:
        dump.pop(block, None)
    for value in dump.values():
        if isinstance(value, dict):
            for leaf in _NOT_WEIGHTS_FIELDS:
                value.pop(leaf, None)
    return dump


def run_fingerprint(config, source: str, path: Path | None) -> dict:
    """Everything that determines the weights ``dress prune`` writes (see module docstring)."""
    fingerprint: dict[str, Any] = {
        "format": FORMAT,
        "dress_version": __version__,
        "model": model_identity(source, path),
        "settings": weight_settings(config),
    }
    calib = Path(str(config.data.calib)).expanduser()
    if calib.is_file():
        fingerprint["calibration_file_sha256"] = file_sha256(calib)
    return fingerprint


class RunState:
    """``<work_dir>/run.json``: the fingerprint of the run that owns the work folder and what it has
    recorded so far (``{"fingerprint": {...}, "recorded": {key: {"params": ..., "value": ...}}}``).
    Only the main process of a launch writes; every process reads."""

    def __init__(self, work_dir: Path, fingerprint: dict, recorded: dict | None = None, writer: bool = True):
        self.work_dir = Path(work_dir)
        self.fingerprint = fingerprint
        self.recorded: dict[str, dict] = recorded or {}
        self.writer = writer

    @classmethod
    def open(cls, work_dir: Path, fingerprint: dict, resume: bool, writer: bool = True) -> RunState:
        """The run state of ``work_dir`` for a run with ``fingerprint``. With ``resume`` an existing
        state must belong to the same run (else :class:`DressError` naming the differences)."""
        path = Path(work_dir) / RUN_JSON
        recorded: dict = {}
        if resume and path.is_file():
            stored = _read_json(path)
            check_same_run(stored.get("fingerprint", {}), fingerprint, Path(work_dir))
            recorded = stored.get("recorded", {})
        state = cls(work_dir, fingerprint, recorded, writer)
        # A stored choice (channels, layers) is part of what later checkpoints must match.
        for key, entry in recorded.items():
            if entry.get("weights"):
                state.fingerprint = {**state.fingerprint, key: entry["value"]}
        state._write()
        return state

    def recall(self, key: str, params: Any, compute: Callable[[], Any], *, weights: bool = False) -> Any:
        """The value recorded under ``key`` with the same ``params``, or ``compute()`` (recorded now).
        ``weights``: the value decides weights (a channel choice); it joins the fingerprint."""
        entry = self.recorded.get(key)
        fresh = entry is None or entry.get("params") != _canonical(params)
        if fresh:
            entry = {"params": _canonical(params), "value": _canonical(compute()), "weights": weights}
            self.recorded[key] = entry
        if weights:
            self.fingerprint = {**self.fingerprint, key: entry["value"]}
        if fresh:
            self._write()
        return entry["value"]

    def has(self, key: str) -> bool:
        return key in self.recorded

    def _write(self) -> None:
        if not self.writer:
            return
        write_json_atomic(self.work_dir / RUN_JSON, {"fingerprint": self.fingerprint, "recorded": self.recorded})


def _canonical(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, tensors lists)."""
    return json.loads(json.dumps(value, default=_jsonable))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DressError(f"{path} is damaged ({err}); delete {path.parent} to start over") from None
    if not isinstance(data, dict):
        raise DressError(f"{path} is damaged (not a JSON object); delete {path.parent} to start over")
    return data


def recall(key: str, params: Any, compute: Callable[[], Any], *, weights: bool = False) -> Any:
    """:meth:`RunState.recall` on the active run, or just ``compute()`` outside one."""
    state = active_run()
    if state is None:
        return compute()
    return state.recall(key, params, compute, weights=weights)


def current_fingerprint(config) -> dict:
    """:func:`run_fingerprint` of ``config`` with its model resolved (no download: a hub id is named
    by its cached revision, if any)."""
    source, path = resolve_model_path(config.model)
    return run_fingerprint(config, source, path)


def finished_record(config, out: Path) -> dict | None:
    """The ``dress.json`` of the finished output ``out`` when a run with this config's fingerprint made
    it (a retry whose kill landed after the output was in place), else ``None``."""
    record = _json_or_empty(Path(out) / "dress.json")
    stored = record.get("run_fingerprint")
    return record if stored is not None and digest(stored) == digest(current_fingerprint(config)) else None


def start_run(config, out: Path, work_dir: Path, *, overwrite: bool, resume: bool, runtime=None, log=print) -> RunState:
    """The rules of ``dress prune --out OUT [--resume] [--overwrite]``, checked before any model loads:

    * ``--resume`` on a finished output made with the same fingerprint is no error: the caller
      returns its record (:func:`finished_record`); made with other settings it is refused unless
      ``--overwrite``, naming what differs;
    * without ``--resume``, an existing output or the checkpoints of an interrupted run are refused
      unless ``--overwrite`` (which discards the checkpoints and starts over);
    * ``--resume`` continues only a run with the same fingerprint (:meth:`RunState.open`);
    * temporary output folders of killed processes are removed.

    Returns the run's :class:`RunState` (to activate with :func:`running`)."""
    import shutil

    runtime = runtime or Runtime()
    out, work_dir = Path(out), Path(work_dir)
    if resume and out.exists() and not overwrite:
        stored = _json_or_empty(out / "dress.json").get("run_fingerprint")
        what = (f" made with other settings ({'; '.join(differences(stored, current_fingerprint(config), there='there'))})"
                if stored else "")
        raise DressError(
            f"{out} is already a finished output{what}: there is nothing to resume. Pass --overwrite to prune "
            "again into it, or choose another --out"
        )
    if not resume:
        check_output_dir(out, overwrite)
        if work_dir.exists() and not overwrite:
            raise DressError(
                f"{work_dir} holds the checkpoints of an interrupted run: add --resume to continue it, or "
                "--overwrite to discard them and start over"
            )
    source, path = resolve_model_path(config.model)
    fingerprint = run_fingerprint(config, source, path)
    runtime.barrier()  # every process has checked before the main one changes anything
    if runtime.is_main:
        for stale in remove_stale_partials(out):
            log(f"[dress] removed {stale.name}, a partial output of a killed run")
        if not resume and work_dir.exists():
            shutil.rmtree(work_dir)
            log(f"[dress] --overwrite: discarded the checkpoints in {work_dir}")
        if resume and not (work_dir / RUN_JSON).is_file():
            log(f"[dress] --resume: no checkpoints in {work_dir}; starting from the beginning")
    runtime.barrier()
    state = RunState.open(work_dir, fingerprint, resume, writer=runtime.is_main)
    if resume and state.recorded:
        log(f"[dress] --resume: continuing the run in {work_dir} (recorded: {', '.join(state.recorded)})")
    runtime.barrier()
    return state
