"""Widths runtimes can quantize (dress.pruning.widths), zero-channel padding (dress.pruning.pad),
`dress export`, and saved tokenizers that transformers 4 reads (dress.tokenizers_compat)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dress.cli import main
from dress.errors import DressError
from dress.pruning.hidden import remove_hidden_channels
from dress.pruning.pad import pad_hidden_channels
from dress.pruning.widths import choose_width
from tiny_models import byte_tokenizer, sample_ids, save_tiny, tiny_model, write_corpus


# ---- the width rule ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "d, ratio, heads, alignment, width, runtime_width",
    [
        (576, 0.25, 9, 32, 432, 448),  # SmolLM2: 9 heads, no multiple of 288 near 432 -> keep 432, pad at export
        (576, 0.50, 9, 32, 288, 288),  # 288 = lcm(9, 32): aligned and stock
        (896, 0.25, 14, 32, 672, 672),  # Qwen2-0.5B: 672 = 3 x lcm(14, 32)
        (896, 0.30, 14, 32, 630, 640),  # nearest multiple of 224 is 45 channels away: keep 630, pad to 640
        (640, 0.25, 4, 32, 480, 480),  # Gemma-3-270M
        (4096, 0.27, 32, 32, 2976, 2976),  # 2990 -> nearest multiple of 32
        (4096, 0.27, 32, 64, 3008, 3008),  # ... or of 64 when asked
        (4096, 0.27, 32, 1, 2976, 2976),  # exact ratio: nearest head multiple
        (576, 0.25, 9, 1, 432, 432),
        (48, 0.25, 4, 32, 36, 64),  # a tiny model is not cut by a third to reach 32
        (2048, 0.30, 16, 32, 1440, 1440),
    ],
)
def test_chosen_width(d, ratio, heads, alignment, width, runtime_width):
    choice = choose_width(d, ratio, heads, alignment)
    assert (choice.width, choice.runtime_width) == (width, runtime_width)
    assert choice.width % heads == 0 and choice.runtime_width % alignment == 0
    assert choice.effective_ratio == pytest.approx(1 - width / d)
    assert choice.aligned == (width % alignment == 0)


def test_width_notes_say_what_happened():
    assert "pads it with zero channels to 448" in choose_width(576, 0.25, 9).note
    note = choose_width(4096, 0.27, 32, 64).note
    assert "rounded to 3008" in note and "--width-multiple 1 keeps 2976" in note
    assert choose_width(4096, 0.25, 32).note is None


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2])
def test_bad_ratio_or_multiple_is_a_clear_error(bad):
    with pytest.raises(DressError, match="ratio"):
        choose_width(576, bad, 9)
    with pytest.raises(DressError, match="width-multiple"):
        choose_width(576, 0.25, 9, 0)


# ---- zero-channel padding is exact -----------------------------------------------------------------

@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "gemma3_text"])
@pytest.mark.parametrize("width", [64, 45])  # 64: a multiple of the 4 heads; 45: one a stock config rejects
def test_padding_keeps_logits(model_type, width):
    model = tiny_model(model_type)
    remove_hidden_channels(model, [1, 5, 7, 9, 20, 30, 31, 40, 41, 42, 43, 47])  # 48 -> 36
    ids = sample_ids()
    with torch.no_grad():
        before = model(ids).logits
        assert pad_hidden_channels(model, width) == 36
        after = model(ids).logits
    assert model.config.hidden_size == width and model.get_input_embeddings().weight.shape[1] == width
    assert (after - before).abs().max().item() <= 1e-4


def test_padded_model_reloads_with_the_same_logits(tmp_path):
    from dress.export import write_hf_folder

    model = tiny_model("llama")
    remove_hidden_channels(model, list(range(36, 48)))
    ids = sample_ids()
    with torch.no_grad():
        before = model(ids).logits
    pad_hidden_channels(model, 64)
    write_hf_folder(model, byte_tokenizer(), tmp_path / "hf", {"test": True})
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert reloaded.config.hidden_size == 64 and reloaded.config.tie_word_embeddings
    with torch.no_grad():
        assert (reloaded(ids).logits - before).abs().max().item() <= 1e-4


def test_padding_refuses_layernorm_families():
    with pytest.raises(DressError, match="not supported"):
        pad_hidden_channels(tiny_model("opt"), 64)


# ---- dress prune records the width; dress export pads it -------------------------------------------

def _prune(model_dir, corpus, out, *extra):
    return main(["prune", str(model_dir), "--out", str(out), "--calib", str(corpus), "--method", "direct",
                 "--no-rft", "--no-eval", "--samples", "4", "--seq-len", "32", "--device", "cpu", *extra])


def test_prune_records_width_and_export_pads_to_32(tmp_path, capsys):
    model_dir, corpus = save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "c.txt")
    out = tmp_path / "pruned"
    assert _prune(model_dir, corpus, out, "--ratio", "0.25") == 0
    record = json.loads((out / "dress.json").read_text())
    assert record["hidden_size"] == {"before": 48, "after": 36}
    assert record["width"]["effective_ratio"] == 0.25 and record["width"]["runtime_width"] == 64
    assert record["width"]["aligned"] is False and record["config"]["width_multiple"] == 32
    assert "effective ratio 0.250" in capsys.readouterr().out

    exported = tmp_path / "exported"
    assert main(["export", str(out), "--out", str(exported)]) == 0
    config = json.loads((exported / "hf" / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["head_dim"] == 16
    note = json.loads((exported / "hf" / "export.json").read_text())
    assert note["hidden_size"] == {"model": 36, "exported": 64}
    from safetensors import safe_open

    with safe_open(str(exported / "hf" / "model.safetensors"), "pt") as f:
        for name in f.keys():  # every matrix that reads the residual stream has rows of 32k
            if name.endswith(("q_proj.weight", "gate_proj.weight", "embed_tokens.weight")):
                assert f.get_slice(name).get_shape()[1] % 32 == 0
    assert json.loads((exported / "hf" / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_exact_ratio_option(tmp_path):
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=258, hidden_size=256, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    folder = tmp_path / "m"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    corpus = write_corpus(tmp_path / "c.txt")
    # 27% of 256 asks for 186.9: the aligned width is 192, --width-multiple 1 gives the head multiple 188
    assert _prune(folder, corpus, tmp_path / "aligned", "--ratio", "0.27") == 0
    assert _prune(folder, corpus, tmp_path / "exact", "--ratio", "0.27", "--width-multiple", "1") == 0
    aligned = json.loads((tmp_path / "aligned" / "dress.json").read_text())
    exact = json.loads((tmp_path / "exact" / "dress.json").read_text())
    assert aligned["hidden_size"]["after"] == 192 and aligned["width"]["aligned"]
    assert aligned["width"]["effective_ratio"] == pytest.approx(0.25)
    assert exact["hidden_size"]["after"] == 188 and exact["width"]["width_multiple"] == 1


def test_export_gguf_without_converter_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    model_dir = save_tiny(tmp_path / "tiny", "llama")
    assert main(["export", str(model_dir), "--out", str(tmp_path / "x"), "--gguf"]) == 1
    assert "convert_hf_to_gguf.py" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_export_refuses_models_only_dress_can_load(tmp_path, capsys):
    model_dir, corpus = save_tiny(tmp_path / "tiny", "opt"), write_corpus(tmp_path / "c.txt")
    assert _prune(model_dir, corpus, tmp_path / "p", "--ratio", "0.25") == 0
    assert main(["export", str(tmp_path / "p"), "--out", str(tmp_path / "x")]) == 1
    assert "no runtime" in capsys.readouterr().err


def test_f16_fallback_check_reads_gguf_rows(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    from dress.export import f16_fallback_tensors

    path = tmp_path / "t.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((64, 432), dtype=np.float16))  # rows of 432: F16 fallback
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((432, 1536), dtype=np.float16))  # rows of 1536: fine
    writer.add_tensor("output_norm.weight", np.zeros((432,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert f16_fallback_tensors(path) == ["blk.0.attn_q.weight"]


# ---- tokenizers transformers 4 can read ------------------------------------------------------------

def _saved_tokenizer(tmp_path):
    from dress.io.saving import save_model

    model = tiny_model("llama")
    tok = byte_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    save_model(model, tok, tmp_path / "m", {"test": True})
    return tmp_path / "m", tok


def test_saved_tokenizer_names_a_class_transformers_4_knows(tmp_path):
    folder, original = _saved_tokenizer(tmp_path)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not {"backend", "is_local", "local_files_only"} & set(config)
    again = AutoTokenizer.from_pretrained(folder)  # transformers 5 reads it back, unchanged
    text = "the cat sat on the mat"
    assert again(text).input_ids == original(text).input_ids
    assert again.eos_token == original.eos_token and again.chat_template == original.chat_template


TF4_PYTHON = os.environ.get("DRESS_TF4_PYTHON")


@pytest.mark.skipif(not TF4_PYTHON, reason="set DRESS_TF4_PYTHON to a python with transformers<5 (.ci/run does)")
@pytest.mark.processes
def test_transformers_4_loads_the_saved_tokenizer(tmp_path):
    folder, original = _saved_tokenizer(tmp_path)
    script = (
        "import json, sys, transformers; from transformers import AutoTokenizer; "
        "assert transformers.__version__.startswith('4.'), transformers.__version__; "
        f"t = AutoTokenizer.from_pretrained({str(folder)!r}); "
        "print(json.dumps({'ids': t('the cat sat on the mat').input_ids, 'eos': t.eos_token}))"
    )
    proc = subprocess.run([TF4_PYTHON, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"ids": original("the cat sat on the mat").input_ids, "eos": original.eos_token}
