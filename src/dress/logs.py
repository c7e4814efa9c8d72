"""Logging and progress bars for every command.

Messages go through :mod:`logging` under the ``dress`` logger (``dress.comparison`` for
``dress compare``), shown as ``[dress] message``. The CLI calls :func:`setup_logging`: one handler
on stderr that flushes every line (nothing is lost when a batch scheduler kills the job), INFO or,
with ``--quiet``, WARNING. Under a launcher only the main process logs (:func:`only_main_process`).
Library users get plain ``logging`` records and configure them as they like.

:func:`progress` is tqdm that stays silent when stderr is not a terminal (log files get no ``\\r``
frames), with ``--quiet`` or ``--no-progress``, and on every process but the main one.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("dress")
_state = {"quiet": False, "main": True, "bars": True}


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now (test harnesses swap it) and flushes each line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never crash a run
            self.handleError(record)


class _Prefixed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.name.replace('.', ' ')}] {record.getMessage()}"


def setup_logging(quiet: bool = False, progress_bars: bool = True) -> None:
    """Route ``dress`` messages to stderr (idempotent; the CLI calls it once per command).

    ``quiet``: warnings and errors only, no bars. ``progress_bars=False``: messages as usual, no bars.
    """
    _state["quiet"] = quiet
    _state["bars"] = progress_bars
    for handler in [h for h in log.handlers if isinstance(h, _Stderr)]:
        log.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(_Prefixed())
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if quiet or not progress_bars or not _is_terminal(sys.stderr):
        # transformers' own bars ("Loading weights", "Writing model shards") follow the same rule as ours
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def only_main_process(is_main: bool) -> None:
    """Under a launcher: the other processes keep warnings and errors only, and no progress bars."""
    _state["main"] = is_main
    if not is_main:
        log.setLevel(logging.WARNING)


def progress(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)``, silent unless stderr is a terminal of the main process, bars are on and not quiet."""
    from tqdm.auto import tqdm

    if kwargs.pop("disable", False) or _state["quiet"] or not _state["bars"] or not _state["main"]:
        kwargs["disable"] = True
    else:
        kwargs["disable"] = None  # tqdm: off when the stream is not a terminal
    return tqdm(iterable, **kwargs)
