"""Layer removal, layer gates, and the layer methods (SLEB, ShortGPT; TRSP's own mechanics: methods/trsp/tests) on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from dress.adapters import adapter_for
from dress.methods.depth.config import DepthConfig
from dress.errors import DressError
from dress.methods import get as get_method
from dress.pruning.gates import LayerGates, record_residual_updates, skipped_layers, stream_outputs
from dress.pruning.layers import layers_for_ratio, remove_layers, removal_note
from dress.training.loop import TrainSettings, train
from tiny_models import MODEL_TYPES, lm_loss, method_context as context, one_thread, sample_ids, save_tiny, tiny_model, write_corpus  # noqa: F401 (one_thread: an autouse fixture)

ATOL = 1e-5


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def zero_layer_update(model, index: int) -> None:
    """Make layer ``index`` the identity by zeroing what it writes into the residual stream."""
    layer = adapter_for(model).decoder_layers(model)[index]
    with torch.no_grad():
        for name in adapter_for(model).layer_writers:
            module = layer.get_submodule(name)
            module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()


def fitted_tiny_model(model_type: str, ids: torch.Tensor):
    """A tiny model trained briefly on ``ids``, so that its layers matter (random layers may not)."""
    model = tiny_model(model_type)
    for p in model.parameters():
        p.requires_grad_(True)
    train(model, ids, TrainSettings(steps=15, lr=3e-3, batch_size=ids.shape[0]))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


# ---- gates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
class TestGates:
    def test_all_ones_is_the_original_model(self, model_type):
        model, ids = tiny_model(model_type), sample_ids()
        expected = logits(model, ids)
        gates = LayerGates(model)
        assert gates.values() == [1.0, 1.0, 1.0]
        torch.testing.assert_close(logits(model, ids), expected, atol=0.0, rtol=0.0)
        gates.remove()
        assert not any("dress_gate" in name for name, _ in model.named_parameters())

    def test_gates_are_trainable_parameters_in_the_state_dict(self, model_type):
        model = tiny_model(model_type)
        gates = LayerGates(model)
        names = [n for n in model.state_dict() if n.endswith("dress_gate")]
        assert len(names) == 3
        assert all(any(g is p for p in model.parameters()) for g in gates.parameters())

    def test_folding_gates_is_exact(self, model_type):
        model, ids = tiny_model(model_type), sample_ids()
        gates = LayerGates(model)
        gates.set([0.6, 1.7, -0.3])
        gated = logits(model, ids)
        assert (gated - logits(tiny_model(model_type), ids)).abs().max() > 1e-3  # the gates do something
        gates.fold()
        assert not hasattr(adapter_for(model).decoder_layers(model)[0], "dress_gate")
        torch.testing.assert_close(logits(model, ids), gated, atol=ATOL, rtol=0.0)

    def test_removing_a_layer_whose_gate_is_zero_is_lossless(self, model_type):
        model, ids = tiny_model(model_type), sample_ids()
        gates = LayerGates(model)
        gates.set([0.8, 0.0, 1.2])
        gated = logits(model, ids)
        gates.fold()
        remove_layers(model, [1])
        torch.testing.assert_close(logits(model, ids), gated, atol=ATOL, rtol=0.0)


def test_gemma3_gate_acts_on_post_norms():
    model = tiny_model("gemma3_text")
    assert stream_outputs(model) == ("post_attention_layernorm", "post_feedforward_layernorm")
    assert stream_outputs(tiny_model("phi")) == adapter_for(tiny_model("phi")).layer_writers


# ---- remove_layers -----------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_remove_layers_reloads_stock_with_the_same_logits(model_type, tmp_path):
    model, ids = tiny_model(model_type), sample_ids()
    result = remove_layers(model, [0])
    assert (result.layers_before, result.layers_after, result.removed) == (3, 2, [0])
    assert result.params_after < result.params_before
    assert model.config.num_hidden_layers == 2
    expected = logits(model, ids)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == 2
    torch.testing.assert_close(logits(reloaded, ids), expected, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_kv_cache_indices_follow_removal(model_type):
    """Incremental decoding with the KV cache equals a full forward: every ``layer_idx`` was renumbered."""
    model, ids = tiny_model(model_type), sample_ids(batch=1, seq=10)
    remove_layers(model, [1])
    indices = {m.layer_idx for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)}
    assert indices == {0, 1}
    full = logits(model, ids)
    with torch.no_grad():
        out = model(input_ids=ids[:, :6], use_cache=True)
        step = model(input_ids=ids[:, 6:], past_key_values=out.past_key_values, use_cache=True)
    torch.testing.assert_close(step.logits, full[:, 6:], atol=ATOL, rtol=0.0)


def test_gemma3_layer_types_follow_removal(tmp_path):
    model, ids = tiny_model("gemma3_text"), sample_ids(seq=24)  # longer than the sliding window (16)
    assert model.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    remove_layers(model, [1])
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    expected = logits(model, ids)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert reloaded.config.layer_types == ["sliding_attention", "full_attention"]
    torch.testing.assert_close(logits(reloaded, ids), expected, atol=0.0, rtol=0.0)


def test_qwen2_sliding_layers_and_max_window_layers_follow_removal():
    from transformers import Qwen2Config

    config = Qwen2Config(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=4, use_sliding_window=True, sliding_window=4, max_window_layers=2,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    remove_layers(model, [0, 3])
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    assert model.config.max_window_layers == 1


def test_remove_layers_rejects_bad_lists():
    model = tiny_model("llama")
    for bad in ([0, 0], [3], [0, 1, 2]):
        with pytest.raises(DressError):
            remove_layers(model, bad)


def test_layers_for_ratio_counts_parameters():
    model = tiny_model("llama")  # 3 layers; embeddings are a large share of a tiny model
    per_layer = sum(p.numel() for p in adapter_for(model).decoder_layers(model)[0].parameters())
    total = sum(p.numel() for p in model.parameters())
    k = layers_for_ratio(model, 0.25)
    assert k == min((1, 2), key=lambda n: abs(n * per_layer / total - 0.25))
    assert removal_note(model, k).startswith(f"removing {k} of 3 layers = ")
    with pytest.raises(DressError):
        layers_for_ratio(model, 1.5)


# ---- instruments -------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "phi"])
def test_skipping_with_a_cached_prefix_equals_removal(model_type):
    model, ids = tiny_model(model_type), sample_ids()
    entering = {}
    with record_residual_updates(model, [1], lambda i, x, y: entering.setdefault(i, x)):
        logits(model, ids)
    with skipped_layers(model, [1]):
        skipped = logits(model, ids)
    with skipped_layers(model, [1], resume_from=(1, entering[1])):
        resumed = logits(model, ids)
    remove_layers(model, [1])
    torch.testing.assert_close(skipped, logits(model, ids), atol=ATOL, rtol=0.0)
    torch.testing.assert_close(resumed, skipped, atol=ATOL, rtol=0.0)


def test_train_extra_loss_and_lr_scale():
    """``extra_loss`` is added to the LM loss; a group with ``lr_scale`` 0 does not move."""
    model = tiny_model("llama")
    gates = LayerGates(model)
    for p in model.parameters():
        p.requires_grad_(False)
    params = gates.parameters()
    for g in params:
        g.requires_grad_(True)
    groups = [{"params": params[:2], "lr_scale": 1.0}, {"params": params[2:], "lr_scale": 0.0}]
    history = train(
        model, sample_ids(batch=4, seq=16), TrainSettings(steps=5, lr=0.05),
        extra_loss=lambda: 100.0 * torch.stack([g.abs() for g in params]).sum(), param_groups=groups,
    )
    values = gates.values()
    assert values[0] < 0.9 and values[1] < 0.9  # the l1 term dominates: gates shrink
    assert values[2] == 1.0
    assert len(history.reg_loss) == 5 and history.reg_loss[0] > 100.0


# ---- methods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "opt", "phi"])
def test_shortgpt_removes_the_layer_that_does_nothing(model_type, tmp_path):
    model = tiny_model(model_type)
    zero_layer_update(model, 1)
    ctx = context(model, "shortgpt", sample_ids(batch=3, seq=16), tmp_path, depth=DepthConfig(layers=1))
    outcome = get_method("shortgpt").function()(ctx)
    scores = outcome.report["block_influence"]
    assert abs(scores[1]) < 1e-6 and min(scores[0], scores[2]) > 1e-4
    assert outcome.record["layers_removed"] == [1]
    assert outcome.record["layers"] == {"before": 3, "after": 2}
    assert abs(outcome.report["prune_gap_nats"]) < 1e-5


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "opt", "phi"])
def test_sleb_removes_the_layer_whose_removal_hurts_least(model_type, tmp_path):
    ids = sample_ids(batch=3, seq=16)
    model = fitted_tiny_model(model_type, ids)
    zero_layer_update(model, 2)
    dense_ppl = math.exp(lm_loss(model, ids))
    # Each first-round score is the perplexity of the model with that layer really removed.
    removed_ppl = {}
    for j in range(3):
        copy = fitted_tiny_model(model_type, ids)
        zero_layer_update(copy, 2)
        remove_layers(copy, [j])
        removed_ppl[j] = math.exp(lm_loss(copy, ids))
    ctx = context(model, "sleb", ids, tmp_path, depth=DepthConfig(layers=2, batch_size=2, score_samples=ids.shape[0]))
    outcome = get_method("sleb").function()(ctx)
    first_round = {int(j): p for j, p in outcome.report["sleb_rounds"][0].items()}
    assert first_round == pytest.approx(removed_ppl, rel=1e-4)
    assert first_round[2] == pytest.approx(dense_ppl, rel=1e-5)
    assert outcome.report["sleb_order"][0] == 2
    assert len(outcome.report["sleb_rounds"][1]) == 2  # round 2 scores the two remaining layers
    assert outcome.record["layers"]["after"] == 1


@pytest.mark.parametrize("method", ["trsp", "shortgpt", "sleb"])
def test_cli_prune_depth_method_end_to_end(method, tmp_path):
    from dress.cli import main

    model_dir = save_tiny(tmp_path / "tiny", "llama")
    corpus = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "out"
    args = [
        "prune", str(model_dir), "--method", method, "--out", str(out), "--layers", "1",
        "--calib", str(corpus), "--samples", "8", "--seq-len", "32", "--split", "3:1",
        "--trsp-steps1", "2", "--trsp-steps2", "2", "--rft-steps", "1",
        "--eval-source", str(corpus), "--eval-seq-len", "32", "--eval-tokens", "256",
    ]
    assert main(args) == 0
    record = json.loads((out / "dress.json").read_text())
    assert record["method"] == method
    assert record["loader"] == "transformers"
    assert record["layers"] == {"before": 3, "after": 2}
    assert len(record["layers_removed"]) == 1
    assert "removing 1 of 3 layers" in record["layer_removal"]
    if method == "trsp":
        assert len(record["trsp_gates"]["stage1"]) == 3
        assert len(record["report"]["trsp"]["stage1"]["lm_loss"]) == 2
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 2


def test_layer_scoring_uses_recovery_windows_when_everything_goes_to_recovery(tmp_path):
    """--split 0:1 (all data for recovery) still scores layers, on the same windows."""
    ids = sample_ids(batch=3, seq=16)
    model = tiny_model("llama")
    ctx = context(model, "shortgpt", ids, tmp_path, depth=DepthConfig(layers=1))
    ctx.reg_part, ctx.rec_part = ids[:0], ids
    outcome = get_method("shortgpt").function()(ctx)
    assert outcome.report["scoring_tokens"] == ids.numel()
    assert outcome.record["layers"]["after"] == 2
