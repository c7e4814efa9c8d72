"""One contract over every registered method (as PEFT's common tester runs one set of checks on
every adapter): a new method that forgets a hook fails here.

For each method, on a tiny Llama: the memory plan names exactly the stages the run records; the
plan's output size is the real one (LLM Surgeon: an upper bound, its zeros stay in place); the
parameter budget's planned count is the real one; a method that claims an exact cut has a zero prune
gap; the saved output reloads with ``dress.load`` with the same logits (tests/test_kills.py: and a
killed run resumes to the same weights)."""

from __future__ import annotations

import pytest
import torch

import dress
from dress.adapters import parameter_count
from dress.memory_plan import plan_stages, pruned_shape, settings_from_config, shape_from_config
from dress.methods import methods
from tiny_models import byte_tokenizer, EVERY_METHOD_SMALL, FAST_SETTINGS, sample_ids, tiny_model, write_corpus

FAST = {**FAST_SETTINGS, "regularize.steps": 2, **EVERY_METHOD_SMALL}
NOT_PLANNED = {"read text", "calibration data"}  # a few MB of tokens: the plan leaves them out on purpose
ZEROS_IN_PLACE = {"llm-surgeon"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt").read_text()


@pytest.mark.parametrize("name", list(methods()))
def test_every_method_keeps_the_contract(name, corpus, tmp_path):
    spec = methods()[name]
    assert spec.memory and spec.shapes, f"{name} must declare its memory terms and its output sizes"
    model = tiny_model("llama")
    shape = shape_from_config(model.config)
    result = dress.prune(model, tokenizer=byte_tokenizer(), calibration=corpus, method=name, ratio=0.3, **FAST)
    config = dress.config.PruneConfig.model_validate(result.record["config"])
    run = settings_from_config(config, "cpu")

    planned = {s.stage for s in plan_stages(shape, run)} - {"save"}
    assert planned == set(result.record["stages"]) - NOT_PLANNED

    real = parameter_count(result.model)
    if name in ZEROS_IN_PLACE:
        assert real <= pruned_shape(shape, run).params
    else:
        assert pruned_shape(shape, run).params == real

    budget = dress.prune(tiny_model("llama"), tokenizer=byte_tokenizer(), calibration=corpus, method=name,
                         ratio=0.3, ratio_of="params", **{**FAST, "evaluate.enabled": False, "recovery.enabled": False})
    if name not in ZEROS_IN_PLACE:
        assert budget.record["parameter_budget"]["planned_params"] == parameter_count(budget.model)

    if spec.exact_cut:  # the claim: what is removed was trained to nothing, so the cut changes no output
        assert abs(result.record["report"]["prune_gap_nats"]) < 1e-4

    out = result.save(tmp_path / "out")
    reloaded = dress.load(out)
    ids = sample_ids()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits, atol=1e-5)
