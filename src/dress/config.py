"""Typed configuration: one pydantic model per block, shared by the CLI and the Python API.

:data:`PruneConfig` is the whole run. Its common blocks are defined here (data, recovery,
evaluation, distillation); each method's own block (``regularize``, ``depth``, ``trsp``, ...) is
defined in the method's folder and joined in from the registry (:mod:`dress.methods`), as are the
``method`` choices. Unknown keys are errors (``extra="forbid"``). The resolved config is saved in
every output's ``dress.json``, whose ``config`` block can be fed back with ``--config``.

**A flag is a field.** The CLI (:mod:`dress.cli.options`) is generated from these fields: the flag
of field ``block.name`` is ``--`` + the block's ``flag_prefix`` + the name with ``-`` for ``_``,
unless the field says otherwise (``json_schema_extra={"flag": ...}``); its help is the field's
``description`` and its default. :func:`config_fields` lists them; :func:`validate_config` names
the flag in every error.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo

from dress.errors import DressError
from dress.methods import config_blocks, methods
from dress.config_base import StrictConfig, flag
from dress.training.config import RecoveryConfig


class DataConfig(StrictConfig):
    """Calibration draw: ``samples`` windows of ``seq_len`` tokens from ``calib``, split
    ``split`` (regularization:recovery) along the sample axis."""

    title: ClassVar[str] = "calibration data"
    calib: str = Field("wiki", description="wiki|books (bundled), wikitext2|ptb|c4|alpaca (hub), or a .txt/.jsonl file")
    samples: int = Field(192, ge=1, description="number of calibration windows")
    seq_len: int = Field(256, ge=8, description="tokens per calibration window")
    split: str = Field("3:1", description="regularization:recovery split of the windows, e.g. 3:1 (1:0: no recovery part)")
    seed: int = Field(0, description="seed of the calibration draw", json_schema_extra=flag("--data-seed"))


class EvalConfig(StrictConfig):
    """Held-out perplexity of dense and pruned models, in the same run."""

    title: ClassVar[str] = "evaluation"
    flag_prefix: ClassVar[str] = "eval-"
    enabled: bool = Field(True, description="evaluate dense and pruned perplexity", json_schema_extra=flag("--eval"))
    source: str = Field("wiki", description="held-out text (wiki: the bundled evaluation part, disjoint from calibration)")
    seq_len: int = Field(512, ge=8, description="evaluation context (tokens per window)")
    max_tokens: int | None = Field(
        32768, ge=1, description="evaluate on at most this many tokens ('all': the whole evaluation part)",
        json_schema_extra=flag("--eval-tokens"))
    batch_size: int = Field(4, ge=1, description="windows per evaluation forward")


class DistillConfig(StrictConfig):
    """Optional distillation from the dense model in every training stage (regularization,
    recovery, TRSP's stages): the loss is ``(1 - weight) * LM + weight * KL(dense || student)`` at
    ``temperature`` (see :mod:`dress.training.distill`). ``weight = 0`` (default) trains on the LM
    loss alone. It applies to every method alike, so a comparison stays fair."""

    title: ClassVar[str] = "distillation (every training stage, every method)"
    flag_prefix: ClassVar[str] = "distill-"
    weight: float = Field(
        0.0, ge=0.0, le=1.0, description="weight W of the KL to the dense model's next-token distribution; "
        "the LM loss gets 1-W (0: off; 1: distillation only)", json_schema_extra=flag("--distill"))
    temperature: float = Field(1.0, gt=0.0, description="softmax temperature of the distillation loss")


class _PruneBase(StrictConfig):
    model: str | None = Field(None, description="model: bundled name, folder or hub id (None: the bundled smollm2-135m)",
                              json_schema_extra=flag(None))
    method: str = Field("dress", description="pruning method")  # choices: the registry's (see _build_prune_config)
    ratio: float = Field(
        0.25, gt=0.0, lt=1.0, description="fraction to remove: of the hidden width (width methods), or of the "
        "parameters, in whole layers (sleb, shortgpt, trsp), or of the parameters, zeroed in decoder linears (llm-surgeon; "
        "see --surgeon-target)")
    ratio_of: Literal["method", "params"] = Field(
        "method", description="what --ratio counts: method = the method's own knob (above); params = a parameter "
        "budget for every method alike: keep (1 - RATIO) of all parameters, each method landing as near as its "
        "granularity allows (width, layers, zeroed entries); the distance is recorded")
    selection: Literal["last", "activation", "weight"] = Field(
        "activation", description="which hidden channels to remove: smallest activations, smallest weights, or the last ones")
    width_multiple: int = Field(
        32, ge=1,
        description="width methods keep a hidden width that is a multiple of this where one lies near the ratio "
        "(llama.cpp quantizes only rows of 32k); 1: the exact ratio, rounded to the head count. Where the head "
        "count rules it out (SmolLM2: 9 heads), `dress export` pads with zero channels (exact)")
    data: DataConfig = Field(default_factory=DataConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    device: str | None = Field(None, description="cpu, cuda, cuda:1 (default: cuda if available)")
    bf16: bool | None = Field(None, description="bf16 autocast (default: on GPU, off on CPU)")
    seed: int = Field(0, description="training seed")
    # what is settled before loading: the memory plan's check, the output's dtype, named protocols (dress.memory_plan, dress.presets)
    skip_memory_check: bool = Field(
        False, description="load the model even when the memory plan (dress plan) says the run will not fit")
    save_dtype: Literal["source", "fp32", "bf16", "fp16"] = Field(
        "source", description="dtype of the saved model (source: the input checkpoint's dtype)")
    preset: Literal["cpu-demo", "paper"] | None = Field(
        None, description="named protocol: cpu-demo (small, 2-core CPU) or paper (WikiText-2 1000 x 2048, split 3:1, "
        "eval at 2048); options typed beside it override it (default: paper for a non-bundled model on a GPU, "
        "else cpu-demo)")

    @field_validator("ratio", mode="before")
    @classmethod
    def _finite_ratio(cls, value):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a number strictly between 0 and 1 (e.g. 0.25), not {value}")
        return value

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        return float(value)


def _build_prune_config():
    names = tuple(methods())
    blocks = {name: (block, Field(default_factory=block)) for name, block in config_blocks().items()}
    model = create_model(
        "PruneConfig", __base__=_PruneBase, __module__=__name__,
        method=(Literal[names], Field("dress", description="pruning method")),
        **blocks,
    )
    model.__doc__ = ("The whole ``dress prune`` run: the common blocks of :mod:`dress.config` and every "
                     "method's own block from the registry (see the module docstring).")
    return model


PruneConfig = _build_prune_config()


@dataclass(frozen=True)
class ConfigField:
    """One leaf field of a config: ``dotted`` name, its ``flag`` (None: not on the command line),
    the block it is in, and pydantic's field info (annotation, default, description)."""

    dotted: str
    flag: str | None
    block: str
    info: FieldInfo
    aliases: tuple[str, ...] = ()  # older spellings of the flag, still accepted

    @property
    def default(self) -> Any:
        return self.info.get_default(call_default_factory=True)


def config_fields(model=None, prefix: str = "", flag_prefix: str = "", block: str = "") -> Iterator[ConfigField]:
    """Every leaf field of ``model`` (default :data:`PruneConfig`), blocks expanded, in order."""
    model = model or PruneConfig
    own = model.__dict__.get("__annotations__", {}) if prefix else {}  # a stage's own knobs before the
    fields = model.model_fields.items()  # training options it inherits
    for name, info in sorted(fields, key=lambda item: bool(own) and item[0] not in own):
        dotted = prefix + name
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, StrictConfig):
            yield from config_fields(sub, dotted + ".", getattr(sub, "flag_prefix", ""), getattr(sub, "title", name))
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        option = extra["flag"] if "flag" in extra else "--" + flag_prefix + name.replace("_", "-")
        old_names = getattr(model, "unprefixed_aliases", ()) if prefix else ()
        aliases = ("--" + name.replace("_", "-"),) if name in old_names and option else ()
        yield ConfigField(dotted, option, block, info, aliases)


def flag_of(dotted: str) -> str | None:
    return {f.dotted: f.flag for f in config_fields()}.get(dotted)


def explain(err: ValidationError, where: str = "") -> str:
    """A validation error as one line naming the flag (and the field) of every problem."""
    lines = []
    for e in err.errors():
        dotted = ".".join(str(x) for x in e["loc"])
        field = {f.dotted: f for f in config_fields()}.get(dotted)
        option = field.flag if field else None
        name = f"{option} ({', '.join((*field.aliases, dotted))})" if option else dotted
        lines.append(f"{name}: {e['msg']}")
    return f"invalid settings{where}: " + "; ".join(lines)


def validate_config(tree: dict, where: str = ""):
    """``PruneConfig.model_validate(tree)``, with errors as a :class:`DressError` naming flags."""
    try:
        return PruneConfig.model_validate(tree)
    except ValidationError as err:
        raise DressError(explain(err, where)) from None


def read_config_file(path: str | Path, what: str = "config") -> dict:
    """A JSON or YAML mapping from ``path``. A ``dress.json`` yields its ``config`` block."""
    path = Path(path)
    if not path.is_file():
        raise DressError(f"{what} file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise DressError(f"{path} is neither JSON nor YAML: {err}") from None
    if isinstance(data, dict) and "config" in data and "method" not in data and "variants" not in data:
        data = data["config"]  # a dress.json
    if not isinstance(data, dict):
        raise DressError(f"{path} does not hold a {what} mapping")
    return data


# ---- nested config dicts --------------------------------------------------------------------
def expand_dotted(flat: dict[str, Any]) -> dict:
    """``{"regularize.lam": 4}`` -> ``{"regularize": {"lam": 4}}``; nested dicts may mix both forms."""
    tree: dict = {}
    for key, value in flat.items():
        if isinstance(value, dict):
            value = expand_dotted(value)
        for part in reversed(key.split(".")):
            value = {part: value}
        merge_trees(tree, value)
    return tree


def merge_trees(into: dict, other: dict) -> dict:
    """Merge nested dict ``other`` into ``into`` (in place; ``other`` wins) and return ``into``."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_trees(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into
