"""``results.json``: the one file a comparison keeps, and how a rerun knows what is already done.

Contract:

* ``results.json`` in the output folder holds ``format`` (:data:`FORMAT_VERSION`), ``spec``,
  ``order`` (the entry keys in run order), ``dense`` (the dense row) and ``entries`` (one row per
  finished entry, by key). :func:`save_results` rewrites it atomically; the runner calls it after
  every finished entry, so an interruption loses at most the entry in progress.
* Each row carries a *fingerprint* (:func:`dress.resume.digest`): an entry's is its config as
  planned (before the preset and the device are resolved), the zero-shot protocol if its row is scored (else the protocol of
  zero-shot off) and the speed setting; the dense row's is the model, device, evaluation and
  zero-shot protocol. A rerun skips each row whose stored fingerprint matches (:func:`entry_done`,
  :func:`dense_done`) and recomputes the others. These hashes are what a resumed ``dress compare``
  matches against files written earlier: changing what goes into them reruns every old entry.
* A file that is not JSON, or was written with another ``format``, is refused with a
  :class:`~dress.errors.DressError` rather than overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from dress.comparison.planning import Entry
from dress.comparison.spec import ZeroShotSettings
from dress.errors import DressError
from dress.io.record import write_json_atomic
from dress.resume import digest

RESULTS_JSON = "results.json"
FORMAT_VERSION = 1

fingerprint = digest  # one canonical hash for compare's entries and prune's checkpoints (dress.resume)


def entry_fingerprint(entry: Entry, settings: dict) -> str:
    """``settings``: ``{"zeroshot": ZeroShotSettings, "speed": bool}`` of the comparison."""
    zs: ZeroShotSettings = settings["zeroshot"]
    scored = zs.protocol() if zs.scores(entry.label) else ZeroShotSettings().protocol()  # unscored: as if off
    return fingerprint({"config": entry.config.model_dump(), "zeroshot": scored, "speed": settings["speed"],
                        "format": FORMAT_VERSION})


def dense_fingerprint(config, settings: dict) -> str:
    dump = config.model_dump()
    return fingerprint({"model": dump["model"], "evaluate": dump["evaluate"], "device": dump["device"],
                        "zeroshot": settings["zeroshot"].protocol(), "format": FORMAT_VERSION})


def entry_done(results: dict, entry: Entry, settings: dict) -> bool:
    stored = results.get("entries", {}).get(entry.key)
    return bool(stored) and stored.get("fingerprint") == entry_fingerprint(entry, settings)


def dense_done(results: dict, config, settings: dict) -> bool:
    return results.get("dense", {}).get("fingerprint") == dense_fingerprint(config, settings)


def load_results(path: Path) -> dict:
    """The stored results, or an empty results dict when ``path`` does not exist."""
    if not path.is_file():
        return {"format": FORMAT_VERSION, "entries": {}}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DressError(f"{path} is not valid JSON ({err}); move it away to start over") from None
    if results.get("format") != FORMAT_VERSION:
        raise DressError(f"{path} was written by another version of dress compare; move it away to start over")
    return results


def save_results(results: dict, out: Path) -> None:
    write_json_atomic(out / RESULTS_JSON, results)
