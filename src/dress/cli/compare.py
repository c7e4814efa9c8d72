"""``dress compare``: run several methods with one calibration draw and one evaluation, and write
the paper-style table and figures (see :mod:`dress.comparison`).

Settings come from, in increasing priority: ``--config FILE`` (a :class:`dress.comparison.CompareConfig`
in YAML/JSON, e.g. one of ``experiments/``), then ``--methods``/``--ratios``, then every option of
``dress prune`` (``--samples``, ``--steps``, ...: they set the base config of all methods), then
``--set FIELD=VALUE`` (one value: a base setting; several, comma-separated: a sweep).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dress.cli.options import add_config_options, overrides
from dress.config import expand_dotted, merge_trees
from dress.errors import DressError

ON_INTERRUPT = "interrupted; finished entries are kept: rerun the same command to continue"

# config fields that compare sets per entry itself
_PER_ENTRY = ("model", "method", "ratio")


def add_parser(subparsers) -> argparse.ArgumentParser:
    from dress.methods import aliases, methods

    p = subparsers.add_parser(
        "compare",
        help="compare pruning methods on one model: one calibration draw, one evaluation, a table and plots",
        description="Prune MODEL with each method at each ratio from the same calibration windows, evaluate "
        "every result (and the dense model) the same way, and write results.json, results.md and PNG "
        "plots into --out. Rerunning with the same --out skips finished entries.",
    )
    a = p.add_argument
    a("model", nargs="?", help="model to prune (default: bundled smollm2-135m)")
    a("--out", required=True, type=Path, help="output folder (results.json, results.md, plots)")
    a("--config", type=Path, help="comparison file (YAML/JSON; see experiments/)")
    a("--methods", help="comma-separated method names (" + ", ".join(methods()) + ") or aliases ("
      + ", ".join(aliases()) + ")")
    a("--ratios", help="comma-separated pruning ratios, e.g. 0.25 or 0.2,0.3,0.4,0.5,0.6")
    a("--set", dest="sets", action="append", default=[], metavar="FIELD=V[,V...]",
      help="config field (dotted, e.g. regularize.lam); several values make a sweep. Repeatable.")
    g = p.add_argument_group("evaluation beyond perplexity")
    g.add_argument("--zeroshot", action="store_true", default=None, help="lm-eval zero-shot accuracy for every row")
    g.add_argument("--tasks", help="comma-separated zero-shot tasks (default: the paper's five)")
    g.add_argument("--limit", type=int, help="zero-shot items per task (default: all)")
    g.add_argument("--tasks-source", choices=["auto", "bundled", "hub"], help="zero-shot data source")
    g.add_argument("--speed", action="store_true", default=None, help="prefill/generation speed against the dense model")
    g.add_argument("--save-models", action="store_true", default=None, help="also save every pruned model under OUT/models/")
    p.set_defaults(_config_fields=add_config_options(
        p, skip=_PER_ENTRY, title="settings shared by every method (as in dress prune)"))
    return p


def parse_value(text: str) -> Any:
    """JSON if it parses (numbers, true/false, null, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_set(text: str) -> tuple[str, list[Any]]:
    field, sep, values = text.partition("=")
    if not sep or not field or not values:
        raise DressError(f"--set {text!r} must look like FIELD=VALUE or FIELD=V1,V2 (e.g. regularize.lam=1,4,16)")
    if values.lstrip().startswith("["):
        return field.strip(), [parse_value(values)]
    return field.strip(), [parse_value(v.strip()) for v in values.split(",")]


def spec_from_args(args: argparse.Namespace):
    from dress.comparison import CompareConfig, Variant, variant_from_name
    from dress.config import read_config_file

    data = read_config_file(args.config, "comparison") if args.config else {}
    try:
        spec = CompareConfig.model_validate(data)
    except ValidationError as err:
        raise DressError(f"{args.config}: {err}") from None
    base = dict(spec.base)
    if args.model:
        base["model"] = args.model
    base = merge_trees(expand_dotted(base), overrides(args, args._config_fields))
    sweep = dict(spec.sweep)
    for text in args.sets:
        field, values = parse_set(text)
        if len(values) == 1:
            base[field] = values[0]
            sweep.pop(field, None)
        else:
            sweep[field] = values
    variants: list[Variant] = list(spec.variants)
    if args.methods:
        variants = [variant_from_name(name.strip()) for name in args.methods.split(",") if name.strip()]
    ratios = spec.ratios
    if args.ratios:
        try:
            ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
        except ValueError:
            raise DressError(f"--ratios {args.ratios!r} must be comma-separated numbers, e.g. 0.25,0.5") from None
    zeroshot = spec.zeroshot.model_copy()
    if args.zeroshot:
        zeroshot.enabled = True
    if args.tasks:
        zeroshot.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.limit is not None:
        zeroshot.limit = args.limit
    if args.tasks_source:
        zeroshot.source = args.tasks_source
    return CompareConfig(
        base=base, variants=variants, ratios=ratios, sweep=sweep, zeroshot=zeroshot,
        speed=bool(args.speed) or spec.speed, save_models=bool(args.save_models) or spec.save_models,
    )


def run(args: argparse.Namespace) -> int:
    from dress.comparison import run_compare
    from dress.comparison.report import markdown_table
    from dress.training.distributed import launched

    if launched():
        raise DressError("dress compare runs in one process; launch `dress prune` with torchrun/accelerate "
                         "for data-parallel or sharded runs (docs/scale.md)")
    spec = spec_from_args(args)
    results = run_compare(spec, args.out)
    print()
    print(markdown_table(results))
    print(f"\nresults: {args.out / 'results.json'}  table: {args.out / 'results.md'}")
    return 0
