"""``--ratio-of params``: every method lands at or below one parameter budget, and the count it
plans is the count it keeps (LLM Surgeon: at most that many non-zero parameters)."""

from __future__ import annotations

import pytest

import dress
from dress.adapters import parameter_count
from dress.methods import methods
from dress.pruning.budget import Shape, fit_budget
from tiny_models import byte_tokenizer, EVERY_METHOD_SMALL, tiny_model, write_corpus

FAST = {"data.samples": 8, "data.seq_len": 32, "regularize.steps": 2, "recovery.enabled": False, "device": "cpu",
        "evaluate.enabled": False, "selection": "last", **EVERY_METHOD_SMALL}


def test_fit_budget_takes_the_nearest_shape_and_a_tie_goes_to_the_smaller_model():
    shapes = [Shape(0.1, 95, "a"), Shape(0.2, 80, "b"), Shape(0.3, 74, "c"), Shape(0.4, 60, "d")]
    assert fit_budget(shapes, 100, 0.25).shape.knob == "c"  # keep 75: 74 is nearest
    assert fit_budget(shapes, 100, 0.2).shape.knob == "b"  # exactly on the budget
    assert fit_budget(shapes, 100, 0.31).shape.knob == "c" and fit_budget(shapes, 100, 0.31).distance == 5
    assert fit_budget(shapes, 100, 0.37).shape.knob == "d"  # keep 63: 60 (3 below) beats 74 (11 above)
    assert fit_budget(shapes, 100, 0.13).shape.knob == "b"  # keep 87: 80 and 95 tie at 7 -> the smaller model


def _nonzero(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += int((p != 0).sum())
    return total


@pytest.mark.parametrize("method", [name for name, spec in methods().items() if spec.shapes])
def test_every_method_keeps_what_it_planned_within_the_budget(method, tmp_path):
    model = tiny_model("llama")
    dense = parameter_count(model)
    text = write_corpus(tmp_path / "corpus.txt").read_text()
    result = dress.prune(model, tokenizer=byte_tokenizer(), calibration=text, method=method, ratio=0.3,
                         ratio_of="params", **FAST)
    budget = result.record["parameter_budget"]
    if method == "llm-surgeon":
        # its budget counts the entries it zeroes; a zeroed gate row also kills its down_proj column,
        # which the compaction cuts, so it ends with fewer non-zero parameters than planned, never more
        assert _nonzero(result.model) <= budget["planned_params"]
    else:
        assert budget["planned_params"] == parameter_count(result.model)
    assert budget["target_params"] == int(dense * 0.7)
    assert budget["planned_params"] - budget["target_params"] == budget["distance_params"]
    # the recorded config is the method's own knob, so feeding it back repeats the run
    assert result.record["config"]["ratio_of"] == "method" and result.record["config"]["ratio"] == budget["ratio"]


@pytest.mark.parametrize("model_type", ["mistral", "qwen2", "gemma3_text", "opt", "phi"])
def test_width_budget_counts_every_family_exactly(model_type, tmp_path):
    text = write_corpus(tmp_path / "corpus.txt").read_text()
    result = dress.prune(tiny_model(model_type), tokenizer=byte_tokenizer(), calibration=text, method="direct",
                         ratio=0.3, ratio_of="params", **FAST)
    assert result.record["parameter_budget"]["planned_params"] == parameter_count(result.model)
