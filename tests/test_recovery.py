"""Recovery fine-tuning: LoRA merge keeps logits; full fine-tuning trains every parameter."""

from __future__ import annotations

import torch

from dress.training.config import RecoveryConfig
from dress.training.recovery import attach_lora, merge_lora, recover
from dress.training.loop import TrainSettings, train
from tiny_models import sample_ids, tiny_model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_merge_keeps_the_trained_models_logits():
    model = tiny_model("llama")
    ids = sample_ids(2, 12, seed=9)
    dense = _logits(model, ids)
    peft_model = attach_lora(model, RecoveryConfig())
    train(peft_model, sample_ids(6, 16, seed=4), TrainSettings(steps=4, lr=1e-2))
    trained = _logits(peft_model, ids)
    assert (trained - dense).abs().max() > 1e-3  # the adapters learned something
    merged = merge_lora(peft_model)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert (_logits(merged, ids) - trained).abs().max() < 1e-4


def test_full_recovery_trains_every_parameter_and_returns_a_plain_model():
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out, history = recover(model, sample_ids(6, 16, seed=4), RecoveryConfig(mode="full", steps=3, lr=1e-3))
    assert len(history.lm_loss) == 3
    changed = [k for k, v in out.state_dict().items() if not torch.equal(v, before[k])]
    assert "model.embed_tokens.weight" in changed and "model.norm.weight" in changed
    assert not any(p.requires_grad for p in out.parameters())
    assert type(out) is type(model)


def test_lora_recovery_with_gradient_checkpointing_trains_the_same_adapters():
    """The paper preset checkpoints recovery: the adapters inside recomputed layers must still get
    their gradients (frozen inputs; non-reentrant checkpointing), giving the same merged model."""
    ids = sample_ids(2, 12, seed=9)
    merged = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = tiny_model("llama")
        config = RecoveryConfig(steps=3, lr=1e-2, gradient_checkpointing=checkpointing)
        out, _ = recover(model, sample_ids(6, 16, seed=4), config)
        merged.append(_logits(out, ids))
    assert (merged[0] - _logits(tiny_model("llama"), ids)).abs().max() > 1e-3  # it trained
    assert (merged[0] - merged[1]).abs().max() < 1e-4
