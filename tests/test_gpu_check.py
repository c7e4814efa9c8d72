"""benchmarks/gpu_check.py --smoke runs on CPU (the GPU run itself needs a GPU; see docs/scale.md)."""

from __future__ import annotations

import pytest

import importlib.util
import json
from pathlib import Path

from tiny_models import save_tiny, write_corpus

pytestmark = pytest.mark.processes  # launches processes or runs a whole pipeline: `make test-quick` skips it

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_smoke_path_writes_every_figure(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, corpus = save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "c.txt")
    out = tmp_path / "check.json"
    assert module.main(["--smoke", "--device", "cpu", "--models", str(model), "--calib", str(corpus),
                        "--eval-source", str(corpus), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (m,) = result["models"]
    assert result["smoke"] and m["bf16"] is True
    assert 0 <= m["preserved_ratio"] <= 1  # one step: recorded, not yet zero
    assert set(m["ppl"]) == {"dense", "pruned", "pruned_bf16_weights", "pruned_fp32_weights"}
    assert {"prefill_speedup", "generation_speedup"} <= set(m["speed"])
    assert m["memory_gib"]["regularize"]["planned_gib"] > 0 and m["memory_gib"]["regularize"]["measured_gib"] > 0
