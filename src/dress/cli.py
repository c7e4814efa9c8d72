"""The ``dress`` command. Each subcommand lives in :mod:`dress.commands` as a module with
``add_parser(subparsers)`` (declares its options) and ``run(args) -> int``.

A :class:`~dress.errors.DressError` becomes ``error: ...`` on stderr and exit status 2; Ctrl-C
becomes exit status 130 and the module's ``ON_INTERRUPT`` hint (how to continue), if it has one.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dress import __version__
from dress.errors import DressError

# Subcommand name -> module under dress.commands.
COMMANDS = {
    "prune": "prune",
    "eval": "evaluate",
    "bench": "bench",
    "compare": "compare",
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
        module = importlib.import_module(f"dress.commands.{module_name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run, _on_interrupt=getattr(module, "ON_INTERRUPT", ""))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except DressError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; partial outputs were not moved into place" + args._on_interrupt, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
