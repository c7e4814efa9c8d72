"""SIGKILL `dress prune` (tiny model, a real subprocess) at random moments of every stage, then
``--resume``: the result must be bit-identical to an uninterrupted run's, and no kill may leave a
partial output folder (``--out`` is absent or complete; temporary siblings are cleaned up).

tests/kill_driver.py stretches each stage (loading, channel scoring, every optimizer step of
regularization and recovery, checkpoint writing, removal, evaluation, output writing) and prints
a marker when it enters one; the test kills the process a random time after the marker of the
stage it targets. The fast variant (default suite) makes 2 kills; the slow one (``make test-all``)
makes 14, covering every stage, including kills of a resumed run. docs/robustness.md has a run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny_models import EVERY_METHOD_SMALL, flags_of, save_tiny, write_corpus

pytestmark = pytest.mark.processes  # launches processes or runs a whole pipeline: `make test-quick` skips it

HERE = Path(__file__).parent
SLOW = 0.25  # seconds each stretched stage lasts
ARGS = ["--samples", "8", "--seq-len", "32", "--steps", "4", "--rft-steps", "3", "--eval-seq-len", "32",
        "--eval-tokens", "128", "--device", "cpu", "--method", "dress", "--lam", "2", "--checkpoint-every", "1",
        "--selection", "activation"]
# (stage marker, which occurrence of it to wait for): every stage of the run, some more than once.
PLAN = [
    ("load", 1), ("score", 1), ("step", 1), ("step", 3), ("checkpoint", 2), ("step", 5), ("remove", 1),
    ("step", 6), ("checkpoint", 6), ("evaluate", 3), ("write", 1), ("evaluate", 1), ("step", 2), ("write", 1),
]


class Prune:
    """One `dress prune` subprocess whose stdout markers are watched."""

    def __init__(self, model: Path, corpus: Path, out: Path, *extra: str):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
        argv = [sys.executable, str(HERE / "kill_driver.py"), str(SLOW), "prune", str(model), "--out", str(out),
                "--calib", str(corpus), "--eval-source", str(corpus), *ARGS, *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.seen: list[str] = []
        self.lock = threading.Condition()
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("[kill-driver] "):
                with self.lock:
                    self.seen.append(line.split(" ", 1)[1].strip())
                    self.lock.notify_all()
        with self.lock:
            self.seen.append("<exit>")
            self.lock.notify_all()

    def _read_err(self) -> None:
        self.stderr = self.proc.stderr.read()

    def kill_in(self, stage: str, occurrence: int, rng: random.Random, timeout: float = 120) -> bool:
        """SIGKILL a random moment after the ``occurrence``-th marker of ``stage``; False if the run
        ended first."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.seen.count(stage) < occurrence and "<exit>" not in self.seen:
                assert time.monotonic() < deadline, f"no marker {stage} #{occurrence}: {self.seen}"
                self.lock.wait(1.0)
            if self.seen.count(stage) < occurrence:
                return False
        time.sleep(rng.uniform(0.0, SLOW))
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 300) -> int:
        self.proc.wait(timeout)
        time.sleep(0.1)
        return self.proc.returncode


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _assert_not_partial(out: Path) -> None:
    """``out`` is either absent or a complete output (weights and record)."""
    if out.exists():
        assert (out / "dress.json").is_file() and (out / "model.safetensors").is_file(), list(out.iterdir())


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_kills(tmp_path: Path, plan: list[tuple[str, int]], seed: int) -> list[dict]:
    model, corpus = save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "corpus.txt")
    reference = tmp_path / "reference"
    ref = Prune(model, corpus, reference)
    assert ref.finish() == 0, ref.stderr[-2000:]
    expected = _weights(reference)
    rng = random.Random(seed)
    out = tmp_path / "out"
    results = []
    for i, (stage, occurrence) in enumerate(plan):
        # Odd trials kill a run that is itself a resume of an earlier kill (kills during resume).
        chained = i % 2 == 1 and results and results[-1]["chain_open"]
        if not chained:
            shutil.rmtree(out, ignore_errors=True)  # a fresh run: an output after the kill is this run's
        run = Prune(model, corpus, out, *(["--resume"] if chained else ["--overwrite"]))
        killed = run.kill_in(stage, occurrence, rng)
        _assert_not_partial(out)
        entry = {"stage": stage, "occurrence": occurrence, "killed": killed, "resumed_run": bool(chained)}
        if killed:
            if out.exists():  # killed after the output was renamed into place: it is complete
                assert _same(_weights(out), expected)
                entry.update(identical=True, resumes=0, chain_open=False)
                results.append(entry)
                continue
            if i % 2 == 0 and i + 1 < len(plan):  # leave it for the next (resumed, killed again) trial
                entry.update(chain_open=True)
                results.append(entry)
                continue
            resume = Prune(model, corpus, out, "--resume")
            assert resume.finish() == 0, resume.stderr[-3000:]
            entry["resumes"] = 1
        else:
            assert run.finish() == 0, run.stderr[-3000:]
            entry["resumes"] = 0
        assert not out.with_name("out.checkpoints").exists()
        assert not list(tmp_path.glob(".out.*")), list(tmp_path.iterdir())
        entry.update(identical=_same(_weights(out), expected), chain_open=False)
        assert entry["identical"], entry
        results.append(entry)
    if results and results[-1].get("chain_open"):
        resume = Prune(model, corpus, out, "--resume")
        assert resume.finish() == 0, resume.stderr[-3000:]
        assert _same(_weights(out), expected)
    return results


def test_two_kills_then_resume_give_the_uninterrupted_weights(tmp_path):
    results = run_kills(tmp_path, [("step", 2), ("write", 1)], seed=0)
    assert all(r["killed"] for r in results)


@pytest.mark.slow
def test_kills_in_every_stage_then_resume_give_the_uninterrupted_weights(tmp_path):
    seed = int(os.environ.get("DRESS_KILL_SEED", "19"))
    results = run_kills(tmp_path, PLAN, seed=seed)
    killed = [r for r in results if r["killed"]]
    assert len(killed) >= 10, results
    assert {r["stage"] for r in killed} >= {"load", "score", "step", "checkpoint", "remove", "evaluate", "write"}
    report = os.environ.get("DRESS_KILL_REPORT")
    if report:
        import json

        Path(report).write_text(json.dumps({"seed": seed, "slow_s": SLOW, "results": results}, indent=1))


# every registered method's own small settings; flags of other methods are accepted and ignored
METHOD_ARGS = flags_of(EVERY_METHOD_SMALL)


def _method_names() -> list[str]:
    from dress.methods import methods

    return list(methods())


@pytest.mark.parametrize("name", _method_names())
def test_every_method_resumes_after_a_kill_to_the_same_weights(name, tmp_path):
    """The contract's last clause (tests/test_method_contract.py has the in-process ones): a run
    of ``name`` killed in its second optimizer step (regularization, TRSP's stages or recovery,
    after whatever the method computed before training) and resumed ends in the weights of an
    uninterrupted run, bit for bit. A method whose pre-training work is not reproducible, or whose
    training state is not checkpointed, fails here."""
    model, corpus = save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "corpus.txt")
    extra = ("--method", name, *METHOD_ARGS)
    reference = Prune(model, corpus, tmp_path / "reference", *extra)
    assert reference.finish() == 0, reference.stderr[-3000:]
    out = tmp_path / "out"
    killed = Prune(model, corpus, out, *extra)
    assert killed.kill_in("step", 2, random.Random(0)), f"{name}: the run ended before its second step"
    _assert_not_partial(out)
    resumed = Prune(model, corpus, out, *extra, "--resume")
    assert resumed.finish() == 0, resumed.stderr[-3000:]
    assert _same(_weights(out), _weights(tmp_path / "reference")), f"{name}: resumed weights differ"

