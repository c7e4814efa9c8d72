"""The hub sources (``datasets.load_dataset``): how each is read, the 3-second probe before any
download, and the offline fallback to the local ``datasets`` cache."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from dress.data.documents import HUB_PROBE_TIMEOUT_S, TextSource, split_documents
from dress.environment import env_flag
from dress.errors import DressError


@dataclass(frozen=True)
class HubText:
    """How to read one hub dataset.

    ``evaluation_split=None``: the dataset has one split, divided by the ``i % 4 == 3`` rule.
    ``merge_with``: join all rows of a split into one document with this string (PTB).
    ``*_limit``: keep only the first rows of that split.
    """

    description: str
    path: str
    config: str | None
    fields: tuple[str, ...]
    alternative: str
    calibration_split: str = "train"
    evaluation_split: str | None = "test"
    data_files: tuple[tuple[str, str], ...] | None = None
    merge_with: str | None = None
    calibration_limit: int | None = None
    evaluation_limit: int | None = None


HUB_TEXT: dict[str, HubText] = {
    "wikitext2": HubText("WikiText-2 (raw)", "wikitext", "wikitext-2-raw-v1", ("text",), "wiki"),
    "ptb": HubText(
        "Penn Treebank (text only)", "ptb-text-only/ptb_text_only", "penn_treebank", ("sentence",), "wiki",
        merge_with=" ",
    ),
    "c4": HubText(
        "C4 English (first train and validation shards)", "allenai/c4", None, ("text",), "wiki",
        evaluation_split="validation",
        data_files=(
            ("train", "en/c4-train.00000-of-01024.json.gz"),
            ("validation", "en/c4-validation.00000-of-00008.json.gz"),
        ),
        calibration_limit=15_000,
        evaluation_limit=1_100,
    ),
    "alpaca": HubText(
        "Stanford Alpaca instructions", "tatsu-lab/alpaca", None, ("instruction", "input", "output"), "books",
        evaluation_split=None,
    ),
}


def hub_offline_requested() -> bool:
    """Whether the user asked for offline mode (``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE``)."""
    return env_flag("HF_HUB_OFFLINE") or env_flag("HF_DATASETS_OFFLINE")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to ``$HF_ENDPOINT`` (default huggingface.co); any HTTP answer counts."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def _datasets_offline(enabled: bool) -> Iterator[None]:
    """Make ``datasets``/``huggingface_hub`` use only their caches while active.

    Both libraries read ``HF_HUB_OFFLINE`` once at import, so setting the variable later has no
    effect; their module-level flags are switched and restored instead.
    """
    if not enabled:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _rows_to_documents(rows, spec: HubText, limit: int | None) -> list[str]:
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    columns = [rows[field] for field in spec.fields]
    documents = ["\n".join(value for value in values if value) for values in zip(*columns)]
    return [spec.merge_with.join(documents)] if spec.merge_with is not None else documents


def _read_hub(spec: HubText) -> tuple[list[str], list[str]]:
    from datasets import load_dataset

    data_files = dict(spec.data_files) if spec.data_files else None
    calibration_rows = load_dataset(spec.path, spec.config, data_files=data_files, split=spec.calibration_split)
    calibration = _rows_to_documents(calibration_rows, spec, spec.calibration_limit)
    if spec.evaluation_split is None:
        return split_documents(calibration)
    evaluation_rows = load_dataset(spec.path, spec.config, data_files=data_files, split=spec.evaluation_split)
    return calibration, _rows_to_documents(evaluation_rows, spec, spec.evaluation_limit)


def _load_hub(name: str) -> TextSource:
    spec = HUB_TEXT[name]
    offline = hub_offline_requested() or not hub_reachable()
    try:
        with _datasets_offline(offline):
            calibration, evaluation = _read_hub(spec)
    except (OSError, ValueError, RuntimeError) as err:  # ConnectionError, DatasetNotFoundError, ...
        if offline:
            raise DressError(
                f"text source {name!r} ({spec.path}) needs the Hugging Face hub, which is offline or "
                f"unreachable, and it is not in the local datasets cache. Use the bundled source "
                f"{spec.alternative!r} instead (works offline), or run once on a connected machine."
            ) from None
        raise DressError(
            f"loading text source {name!r} ({spec.path}) from the hub failed: {err}. "
            f"The bundled source {spec.alternative!r} works offline."
        ) from None
    return TextSource(name, calibration, evaluation, disjoint=True, description=spec.description)
