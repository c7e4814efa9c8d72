"""What the plan knows about a model: :class:`ModelShape`, read from its config alone (parameters
counted on the meta device, no weight loaded), or built from its widths (:func:`llama_shape`)."""

from __future__ import annotations

from dataclasses import dataclass

from dress.adapters import adapter_for, parameter_count
from dress.io.loading import check_supported_architecture, model_config, resolve_model_path


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs from a model's config (see :func:`shape_from_config`)."""

    name: str
    model_type: str
    params: int  # P, tied weights counted once
    embed_params: int  # token (and positional) embeddings
    hidden: int  # h
    layers: int  # n
    vocab: int  # V
    intermediate: int  # i, the MLP width
    attn_width: int  # a = heads * head_dim
    kv_width: int  # kv-heads * head_dim
    norms_per_layer: int = 2
    tied: bool = True
    heads: int = 1  # attention heads: a stock config's width must be a multiple of it
    one_layer: int = 0  # parameters of one decoder layer (0: estimated from the rest)
    source_dtype: str = "float32"  # dtype of the checkpoint on disk (config's dtype)

    @property
    def layer_params(self) -> float:
        """Parameters of one decoder layer (the final norm and an untied head are not in a layer)."""
        if self.one_layer:
            return float(self.one_layer)
        return (self.params - self.embed_params) / max(self.layers, 1)

    @property
    def layer_params_per_channel(self) -> int:
        """Parameters of one decoder layer that one hidden channel touches (reader columns, writer
        rows, norm entries)."""
        return 2 * self.attn_width + 2 * self.kv_width + 3 * self.intermediate + self.norms_per_layer

    @property
    def params_per_channel(self) -> int:
        """Parameters one hidden channel touches (embedding and head columns, each layer's reader
        columns and writer rows, the norms' entries): what removing one channel removes."""
        return self.vocab * (1 if self.tied else 2) + self.layers * self.layer_params_per_channel + 1


def shape_from_config(config, name: str = "") -> ModelShape:
    """Count parameters on the meta device (no memory) and read the widths from ``config``."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = getattr(config, "text_config", None) or config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    embed = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    one_layer = parameter_count(adapter_for(model).decoder_layers(model)[0])
    h = int(cfg.hidden_size)
    heads = int(getattr(cfg, "num_attention_heads", 1))
    head_dim = int(getattr(cfg, "head_dim", None) or h // heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    inter = int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "ffn_dim", None) or 4 * h)
    norms = 4 if cfg.model_type.startswith("gemma") else 2
    dtype = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or "float32"
    return ModelShape(
        name=name or getattr(cfg, "_name_or_path", "") or cfg.model_type,
        model_type=cfg.model_type, params=int(params), embed_params=int(embed), hidden=h,
        layers=int(cfg.num_hidden_layers), vocab=int(cfg.vocab_size), intermediate=inter,
        attn_width=heads * head_dim, kv_width=kv_heads * head_dim, norms_per_layer=norms,
        tied=bool(getattr(cfg, "tie_word_embeddings", False)), source_dtype=str(dtype).removeprefix("torch."),
        heads=heads, one_layer=int(one_layer),
    )


def load_shape(spec: str | None) -> ModelShape:
    """The shape of a bundled name, local folder or hub id, from its ``config.json`` only."""
    source, path = resolve_model_path(spec)
    if path is not None:
        check_supported_architecture(spec)  # a broken config.json or an unsupported family: the loader's own message
    return shape_from_config(model_config(spec), source)


def llama_shape(name: str, hidden: int, inter: int, layers: int, heads: int, kv_heads: int, vocab: int = 32000,
                tied: bool = False, dtype: str = "float16") -> ModelShape:
    """A Llama-family shape from its widths (no config file needed): q, k, v, o, gate, up, down,
    two norms per layer, a final norm, embeddings (and an untied head)."""
    head_dim = hidden // heads
    a, kv = heads * head_dim, kv_heads * head_dim
    per_layer = hidden * a + 2 * hidden * kv + a * hidden + 3 * hidden * inter + 2 * hidden
    embed = vocab * hidden * (1 if tied else 2)
    return ModelShape(name, "llama", params=embed + layers * per_layer + hidden, embed_params=embed, hidden=hidden,
                      layers=layers, vocab=vocab, intermediate=inter, attn_width=a, kv_width=kv, tied=tied,
                      source_dtype=dtype, heads=heads, one_layer=per_layer)
