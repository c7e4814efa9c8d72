"""`dress prune --method llm-surgeon` and `dress compare --methods llm-surgeon,...` end to end on a
tiny model: a smaller model that loads through dress.load with the pruned model's logits, the two
counts in dress.json and the summary, zeros kept through recovery."""

from __future__ import annotations

import json

import pytest
import torch

import dress
from dress.cli import main
from tiny_models import sample_ids, save_tiny, write_corpus

FAST = ["--samples", "8", "--seq-len", "32", "--rft-steps", "2", "--eval-seq-len", "32", "--eval-tokens", "256",
        "--device", "cpu", "--surgeon-shots", "2"]


@pytest.fixture()
def tiny(tmp_path):
    return save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "corpus.txt")


def test_prune_llm_surgeon_writes_a_smaller_model_that_dress_load_reads(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    out = tmp_path / "out"
    assert main(["prune", str(model_dir), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
                 "--method", "llm-surgeon", "--ratio", "0.3", *FAST]) == 0
    record = json.loads((out / "dress.json").read_text())
    counts = record["llm_surgeon_counts"]
    assert record["loader"] == "dress" and record["stock_checkpoint"] is False
    assert counts["zeroed_entries"] <= counts["target_entries"]
    assert counts["zeroed_entries"] > 0.95 * counts["target_entries"]
    removed = record["parameters"]["before"] - record["parameters"]["after"]
    assert removed == counts["params_removed"] > 0
    assert len(record["report"]["llm_surgeon"]["shots"]) == 2
    captured = capsys.readouterr()
    printed = captured.out + captured.err  # the summary on stdout, the progress log on stderr
    assert "shot 2/2" in printed and "not a stock checkpoint" in printed and "zeroed" in printed

    model = dress.load(out)
    widths = record["rebuild"]["args"]["layers"]
    assert [layer.mlp.down_proj.in_features for layer in model.model.layers] == [w["ffn"] for w in widths]
    from dress.adapters import parameter_count

    assert parameter_count(model) == record["parameters"]["after"]
    # recovery (LoRA, merged) kept the zero structures: zero entries of the linears survive
    zeros = sum(int((m.weight == 0).sum()) for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and ".layers." in n)
    assert zeros >= counts["zeros_kept_in_place"] > 0
    with torch.no_grad():
        assert torch.isfinite(model(sample_ids()).logits).all()


def test_compare_runs_llm_surgeon_beside_another_method(tiny, tmp_path):
    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    assert main(["compare", str(model_dir), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
                 "--ratios", "0.25", "--methods", "llm-surgeon,direct", "--steps", "2", *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["entries"]["llm-surgeon@0.25"]
    assert entry["params"] < entry["params_dense"] and entry["ppl"] > 0
    assert "llm-surgeon" in (out / "results.md").read_text()
