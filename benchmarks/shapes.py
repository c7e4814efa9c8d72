"""Randomly initialised models with real models' shapes: timings depend on shapes, not weights."""

from __future__ import annotations

import torch


def smollm2_shaped_model() -> torch.nn.Module:
    """A Llama with SmolLM2-135M's shape (d=576, 30 layers, 9 heads / 3 KV, vocabulary 49152, tied)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()
