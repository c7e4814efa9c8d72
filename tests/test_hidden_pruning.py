"""Contract tests for hidden-channel removal, one subclass per supported family."""

from __future__ import annotations

import pytest
import torch

from dress.adapters import adapter_for, parameter_count
from dress.io.saving import load_checkpoint, save_model
from dress.errors import DressError
from dress.methods.dress.selection import select_channels
from dress.pruning.hidden import pruned_width, remove_hidden_channels
from tiny_models import MODEL_TYPES, sample_ids, tiny_model

REMOVED = [0, 1, 7, 8, 20, 33, 40, 47]  # scattered, both ends; 40 kept = 10 x 4 heads


@torch.no_grad()
def zero_writers(model, channels) -> None:
    """Make the residual stream exactly zero on ``channels``: the state regularization aims at."""
    adapter = adapter_for(model)
    idx = torch.tensor(channels)
    for _, emb in adapter.named_embeddings(model):
        emb.weight[:, idx] = 0
    for _, writer in adapter.named_writers(model):
        writer.weight[idx, :] = 0
        if writer.bias is not None:
            writer.bias[idx] = 0
    for _, norm in adapter.named_norms(model):
        if adapter.norm_kind == "rms_one_plus":
            norm.weight[idx] = -1.0  # (1 + w) = 0
        else:
            norm.weight[idx] = 0
        if getattr(norm, "bias", None) is not None:
            norm.bias[idx] = 0


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("model_type", MODEL_TYPES)
class TestHiddenRemoval:
    def test_zeroed_channels_removal_is_exact(self, model_type):
        model = tiny_model(model_type)
        zero_writers(model, REMOVED)
        ids = sample_ids()
        before = logits(model, ids)
        result = remove_hidden_channels(model, REMOVED)
        after = logits(model, ids)
        assert result.hidden_after == 48 - len(REMOVED)
        assert (after - before).abs().max().item() < 1e-4

    def test_nonzero_channels_removal_changes_logits(self, model_type):
        # Guards the test above: without zeroing, removal must be visible.
        model = tiny_model(model_type)
        ids = sample_ids()
        before = logits(model, ids)
        remove_hidden_channels(model, REMOVED)
        assert (logits(model, ids) - before).abs().max().item() > 1e-3

    def test_shapes_and_parameter_count(self, model_type):
        model = tiny_model(model_type)
        adapter = adapter_for(model)
        tied = adapter.is_tied(model)
        result = remove_hidden_channels(model, REMOVED)
        d_new = 48 - len(REMOVED)
        for _, reader in adapter.named_readers(model):
            assert reader.weight.shape[1] == d_new
        for _, writer in adapter.named_writers(model):
            assert writer.weight.shape[0] == d_new
        assert adapter.is_tied(model) == tied
        assert result.params_after < result.params_before
        assert result.params_after == parameter_count(model)

    def test_save_and_load_keep_logits(self, model_type, tmp_path):
        model = tiny_model(model_type)
        remove_hidden_channels(model, REMOVED)
        stock = adapter_for(model).stock_after_prune
        record = {"loader": "transformers" if stock else "dress", "hidden_channels_removed": REMOVED}
        save_model(model, None, tmp_path / "out", record)
        reloaded = load_checkpoint(tmp_path / "out")
        ids = sample_ids()
        assert (logits(reloaded, ids) - logits(model, ids)).abs().max().item() < 1e-5
        if stock:
            from transformers import AutoModelForCausalLM

            plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
            assert (logits(plain, ids) - logits(model, ids)).abs().max().item() < 1e-5
            assert plain.config.hidden_size == 48 - len(REMOVED)


def test_keep_nothing_removed_is_identity_for_selection_last():
    model = tiny_model("llama")
    assert select_channels(model, 6, "last") == list(range(42, 48))


def test_activation_selection_avoids_loud_channels():
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 5] *= 100  # a massive-activation channel
    chosen = select_channels(model, 12, "activation", calibration=sample_ids(4, 16))
    assert 5 not in chosen and len(chosen) == 12


def test_ratio_rounds_to_head_multiple():
    model = tiny_model("llama")  # d=48, 4 heads
    d_new, note = pruned_width(model.config, 0.3, adapter_for(model))
    assert d_new % 4 == 0 and d_new == 32 and "rounded" in note
    assert pruned_width(model.config, 0.25, adapter_for(model)) == (36, None)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, 0.999])
def test_bad_ratio_is_a_clear_error(ratio):
    model = tiny_model("llama")
    with pytest.raises(DressError, match="ratio"):
        pruned_width(model.config, ratio, adapter_for(model))


def test_unsupported_architecture_names_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(DressError, match="llama.*opt.*phi"):
        adapter_for(model)
