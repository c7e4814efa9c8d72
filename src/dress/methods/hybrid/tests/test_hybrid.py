"""dress-depth: layers, then width, to the planned count; a stock checkpoint with the same logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import dress
from dress.adapters import parameter_count
from tiny_models import byte_tokenizer, sample_ids, tiny_model, write_corpus

FAST = {"data.samples": 8, "data.seq_len": 32, "regularize.steps": 4, "regularize.lam": 2.0, "recovery.steps": 2,
        "device": "cpu", "evaluate.enabled": False, "width_multiple": 1, "depth.score_samples": 4}


@pytest.mark.parametrize("scorer", ["shortgpt", "sleb"])
def test_removes_layers_then_width_to_the_planned_count_and_reloads_stock(scorer, tmp_path):
    model = tiny_model("llama")
    dense = parameter_count(model)
    text = write_corpus(tmp_path / "corpus.txt").read_text()
    result = dress.prune(model, tokenizer=byte_tokenizer(), calibration=text, method="dress-depth", ratio=0.4,
                         **{**FAST, "hybrid.layers": 1, "hybrid.scorer": scorer})
    record = result.record
    assert record["layers"] == {"before": 3, "after": 2} and len(record["layers_removed"]) == 1
    assert record["hidden_size"]["after"] < 48
    assert record["report"]["regularization"]["preserved_ratio"] == 0.0  # the width cut is DReSS's, exact
    kept = parameter_count(result.model)
    assert kept == record["hybrid"]["planned_params"]
    assert abs(kept - 0.6 * dense) < 0.05 * dense  # lands near the share, both parts together

    out = result.save(tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = sample_ids()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits, atol=1e-5)


def test_zero_layers_is_dress_on_the_width_alone(tmp_path):
    text = write_corpus(tmp_path / "corpus.txt").read_text()
    result = dress.prune(tiny_model("llama"), tokenizer=byte_tokenizer(), calibration=text, method="dress-depth",
                         ratio=0.25, **{**FAST, "hybrid.layers": 0})
    assert "layers_removed" not in result.record and result.record["hidden_size"]["after"] == 36


def test_too_many_layers_is_a_clear_error(tmp_path):
    text = write_corpus(tmp_path / "corpus.txt").read_text()
    with pytest.raises(dress.DressError, match="--hybrid-layers 3: the model has 3 layers"):
        dress.prune(tiny_model("llama"), tokenizer=byte_tokenizer(), calibration=text, method="dress-depth",
                    ratio=0.25, **{**FAST, "hybrid.layers": 3})
