"""Tiny random models of every supported family, built in-process (no downloads)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

VOCAB = 258  # 256 bytes + <bos> + <eos>: matches byte_tokenizer()


def tiny_config(model_type: str):
    from transformers import (
        Gemma3TextConfig,
        LlamaConfig,
        MistralConfig,
        OPTConfig,
        PhiConfig,
        Qwen2Config,
        Qwen3Config,
    )

    common = dict(vocab_size=VOCAB, num_hidden_layers=3, max_position_embeddings=128)
    llama_like = dict(
        common, hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16
    )
    if model_type == "llama":
        return LlamaConfig(**llama_like, tie_word_embeddings=True)
    if model_type == "mistral":
        return MistralConfig(**llama_like, tie_word_embeddings=False)
    if model_type == "qwen2":
        return Qwen2Config(**{k: v for k, v in llama_like.items() if k != "head_dim"}, tie_word_embeddings=False)
    if model_type == "qwen3":
        return Qwen3Config(**llama_like, tie_word_embeddings=True)
    if model_type == "gemma3_text":
        return Gemma3TextConfig(
            **llama_like, sliding_window=16, layer_types=["sliding_attention", "sliding_attention", "full_attention"]
        )
    if model_type == "opt":
        return OPTConfig(
            **common, hidden_size=48, ffn_dim=96, num_attention_heads=4, word_embed_proj_dim=48, enable_bias=True
        )
    if model_type == "phi":
        return PhiConfig(**common, hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=4)
    raise ValueError(model_type)


def tiny_model(model_type: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type), dtype=torch.float32)
    _randomize_norms(model)
    return model.eval()


@torch.no_grad()
def _randomize_norms(model) -> None:
    """Random init leaves norms at 1 (or 0 for Gemma) and biases at 0; make them non-trivial so
    a wrong norm correction cannot hide."""
    for name, param in model.named_parameters():
        if "norm" in name:
            param.add_(0.2 * torch.randn_like(param))
        elif name.endswith("bias"):
            param.normal_(0.0, 0.05)


def sample_ids(batch: int = 2, seq: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, seq), generator=g)


MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "opt", "phi")


def byte_tokenizer(with_bos: bool = False):
    """An offline tokenizer with one token per byte (ids 0..255), ``<bos>`` = 256, ``<eos>`` = 257;
    ``with_bos`` prepends ``<bos>`` like Gemma's tokenizer does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<bos>"] = len(vocab)
    vocab["<eos>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    if with_bos:
        core.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<eos>")


def save_tiny(folder, model_type: str = "llama", seed: int = 0):
    """A tiny model of ``model_type`` plus a byte tokenizer saved as a stock HF folder."""
    model = tiny_model(model_type, seed)
    model.save_pretrained(folder)
    byte_tokenizer(with_bos=model_type.startswith("gemma")).save_pretrained(folder)
    return folder


def write_corpus(path, n_docs: int = 60, seed: int = 0):
    """A small English-like .txt corpus (documents separated by blank lines)."""
    import random

    rng = random.Random(seed)
    words = "the a cat dog sat ran on under mat tree house river quickly slowly red blue big small".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(30, 80))) + "." for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """Import into a test module to run it on one thread: tiny models gain nothing from threads, and
    on a shared 2-core machine intra-op threads oversubscribe it (measured: 15 tiny training steps
    9.5 s with 2 threads, 0.6 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def method_context(model, method: str, ids: torch.Tensor, tmp_path, **config):
    """A :class:`dress.methods.base.PruneContext` on the CPU for calling a method's function directly:
    ``ids`` are its calibration windows (the first one its recovery part) and its held-out text."""
    from dress.config import PruneConfig
    from dress.methods.base import PruneContext
    from dress.pipeline import StageClock

    cfg = PruneConfig(method=method, **config)
    return PruneContext(
        model=model, tokenizer=None, config=cfg, reg_part=ids, rec_part=ids[:1], device=torch.device("cpu"),
        bf16=False, work_dir=tmp_path / "work", resume=False, clock=StageClock(torch.device("cpu")),
        held_out_loss=lambda m: lm_loss(m, ids),
    )


def lm_loss(model, ids) -> float:
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


# Settings that make a whole run take seconds on the tiny models, shared by every test that runs one:
# as dotted config fields (the Python API, dress compare) and as `dress prune` flags.
FAST_SETTINGS = {"data.samples": 8, "data.seq_len": 32, "regularize.steps": 3, "recovery.steps": 2, "device": "cpu",
                 "evaluate.seq_len": 32, "evaluate.max_tokens": 256}
# every method's own knobs at their smallest, for tests that run all registered methods
EVERY_METHOD_SMALL = {"trsp.steps1": 2, "trsp.steps2": 2, "depth.score_samples": 2, "llm_surgeon.samples": 4,
                      "llm_surgeon.shots": 1, "hybrid.layers": 1}


def flags_of(settings: dict) -> list[str]:
    """``dress prune`` flags for dotted ``settings`` (each field's own flag; booleans as --x / --no-x)."""
    from dress.config import flag_of

    argv: list[str] = []
    for dotted, value in settings.items():
        flag = flag_of(dotted)
        assert flag, f"no flag for {dotted}"
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag.removeprefix("--"))
        else:
            argv += [flag, str(value)]
    return argv


FAST_FLAGS = flags_of(FAST_SETTINGS)

