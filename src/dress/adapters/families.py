"""The supported families, as facts. One entry per family; see :mod:`dress.adapters.base`."""

from __future__ import annotations

from dress.adapters.base import Adapter
from dress.errors import DressError

_ATTN_READERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")

# Llama and its descendants (SmolLM2 is a Llama): pre-RMSNorm, gated MLP.
LLAMA = Adapter(
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    layers="model.layers",
    embeddings=("model.embed_tokens",),
    layer_readers=_ATTN_READERS + ("mlp.gate_proj", "mlp.up_proj"),
    layer_writers=("self_attn.o_proj", "mlp.down_proj"),
    layer_norms=("input_layernorm", "post_attention_layernorm"),
    final_norm="model.norm",
    lm_head="lm_head",
    norm_kind="rms",
)

# Gemma3: RMSNorm with (1 + w), a post-norm on each sub-block's output, scaled embeddings.
GEMMA3 = Adapter(
    model_types=("gemma3_text",),
    layers="model.layers",
    embeddings=("model.embed_tokens",),
    layer_readers=_ATTN_READERS + ("mlp.gate_proj", "mlp.up_proj"),
    layer_writers=("self_attn.o_proj", "mlp.down_proj"),
    layer_norms=(
        "input_layernorm",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
    ),
    final_norm="model.norm",
    lm_head="lm_head",
    norm_kind="rms_one_plus",
    scaled_embedding=True,
    per_layer_config_lists=("layer_types",),
)


class _OPTAdapter(Adapter):
    def validate(self, model) -> None:
        config = model.config
        if not config.do_layer_norm_before:
            raise DressError("OPT with post-layer-norm (do_layer_norm_before=False, e.g. opt-350m) is not supported")
        if config.word_embed_proj_dim != config.hidden_size:
            raise DressError("OPT with project_in/project_out (word_embed_proj_dim != hidden_size) is not supported")


OPT = _OPTAdapter(
    model_types=("opt",),
    layers="model.decoder.layers",
    embeddings=("model.decoder.embed_tokens", "model.decoder.embed_positions"),
    layer_readers=_ATTN_READERS + ("fc1",),
    layer_writers=("self_attn.out_proj", "fc2"),
    layer_norms=("self_attn_layer_norm", "final_layer_norm"),
    final_norm="model.decoder.final_layer_norm",
    lm_head="lm_head",
    norm_kind="layernorm",
    stock_after_prune=False,
)

# Phi-1/1.5/2: one LayerNorm feeds attention and MLP in parallel.
PHI = Adapter(
    model_types=("phi",),
    layers="model.layers",
    embeddings=("model.embed_tokens",),
    layer_readers=_ATTN_READERS + ("mlp.fc1",),
    layer_writers=("self_attn.dense", "mlp.fc2"),
    layer_norms=("input_layernorm",),
    final_norm="model.final_layernorm",
    lm_head="lm_head",
    norm_kind="layernorm",
    parallel_block=True,
    stock_after_prune=False,
)

ADAPTERS: tuple[Adapter, ...] = (LLAMA, GEMMA3, OPT, PHI)
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for a in ADAPTERS for t in a.model_types)
