"""The ``dress`` command. Each subcommand lives in :mod:`dress.cli` as a module with
``add_parser(subparsers)`` (declares its options) and ``run(args) -> int``.

A :class:`~dress.errors.DressError` becomes ``error: ...`` on stderr and exit status 1 (2 is
argparse's: a usage error); Ctrl-C becomes exit status 130 and the module's ``ON_INTERRUPT``
message (what was kept and how to continue). Every subcommand takes ``--quiet`` (warnings, errors
and the result only) and ``--no-progress`` (messages without progress bars); both go through
:mod:`dress.logs`.

Every subcommand module is imported to build the parser, so each one imports what its ``run`` needs
inside ``run``: ``dress --help`` and a usage error load no model, data or evaluation code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dress import __version__
from dress.errors import DressError
from dress.logs import setup_logging

# Subcommand name -> module under dress.cli.
COMMANDS = {
    "prune": "prune",
    "eval": "evaluate",
    "bench": "bench",
    "compare": "compare",
    "export": "export",
    "plan": "plan",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dress",
        description="Prune a causal LM (DReSS, TRSP, baselines), evaluate it, and measure its speed.",
    )
    parser.add_argument("--version", action="version", version=f"dress {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS.values():
        module = importlib.import_module(f"dress.cli.{module_name}")
        sub = module.add_parser(subparsers)
        sub.add_argument("-q", "--quiet", action="store_true",
                         help="only warnings, errors and the final result (no progress bars)")
        sub.add_argument("--no-progress", action="store_true",
                         help="no progress bars (messages stay; bars are also off when stderr is no terminal)")
        sub.set_defaults(_run=module.run, _on_interrupt=getattr(module, "ON_INTERRUPT", "interrupted"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(quiet=args.quiet, progress_bars=not args.no_progress)
    try:
        return int(args._run(args) or 0)
    except DressError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(args._on_interrupt, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
