"""The Python API: prune a model object or a name with a config and calibration text, save
separately, evaluate, compare."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import dress
from tiny_models import byte_tokenizer, FAST_SETTINGS, sample_ids, save_tiny, tiny_model, write_corpus

FAST = FAST_SETTINGS


def corpus_text(tmp_path) -> str:
    return write_corpus(tmp_path / "corpus.txt").read_text()


def test_prune_a_model_in_memory_with_calibration_text(tmp_path):
    model, tokenizer = tiny_model("llama"), byte_tokenizer()
    text = corpus_text(tmp_path)
    result = dress.prune(model, tokenizer=tokenizer, calibration=text, method="dress", ratio=0.25,
                         **{**FAST, "evaluate.enabled": False})
    assert result.model.config.hidden_size == 36 and result.record["hidden_size"] == {"before": 48, "after": 36}
    assert result.record["report"]["regularization"]["preserved_ratio"] <= 0.02
    assert not any(p.requires_grad for p in result.model.parameters())

    out = result.save(tmp_path / "out")
    assert json.loads((out / "dress.json").read_text())["method"] == "dress"
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = sample_ids()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(dress.DressError, match="already exists"):
        result.save(tmp_path / "out")


def test_prune_a_folder_by_name_with_a_config_and_overrides(tmp_path):
    folder = save_tiny(tmp_path / "tiny", "llama")
    result = dress.prune(str(folder), {"method": "direct", "selection": "last"}, ratio=0.5,
                         recovery={"enabled": False}, evaluate={"enabled": False}, device="cpu")
    assert result.record["hidden_size"]["after"] == 24 and result.record["source_model"] == str(folder)


def test_save_writes_the_source_dtype_without_changing_the_model_in_memory(tmp_path):
    """A bf16 checkpoint pruned in fp32 on the CPU is saved in bf16 (like `dress prune`), tied
    weights once; the result in memory stays fp32; ``dtype=`` overrides."""
    from safetensors import safe_open

    folder = save_tiny(tmp_path / "tiny", "llama")  # llama tiny: tied embeddings
    AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).save_pretrained(folder)
    result = dress.prune(str(folder), method="direct", selection="last", ratio=0.25,
                         recovery={"enabled": False}, evaluate={"enabled": False}, device="cpu")
    assert result.model.dtype == torch.float32 and result.save_dtype == torch.bfloat16

    out = result.save(tmp_path / "out")
    assert result.model.dtype == torch.float32
    assert json.loads((out / "dress.json").read_text())["saved_dtype"] == "bfloat16"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(out / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
        assert {weights.get_tensor(n).dtype for n in names} == {torch.bfloat16}
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    reloaded = AutoModelForCausalLM.from_pretrained(out)  # dtype from config.json: bf16
    assert reloaded.dtype == torch.bfloat16
    in_memory = result.model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, in_memory[name].to(torch.bfloat16)), name

    ids = sample_ids()
    out32 = result.save(tmp_path / "out32", dtype=torch.float32)
    assert json.loads((out32 / "dress.json").read_text())["saved_dtype"] == "float32"
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(out32, dtype=torch.float32)(input_ids=ids).logits,
                           result.model(input_ids=ids).logits)


def test_prune_refuses_bad_settings_with_the_cli_message():
    with pytest.raises(dress.DressError, match=r"--ratio \(ratio\)"):
        dress.prune(tiny_model("llama"), ratio=1.5)
    with pytest.raises(dress.DressError, match="tokenizer"):
        dress.prune(tiny_model("llama"), method="dress", device="cpu")


def test_evaluate_a_model_object_and_a_folder(tmp_path):
    folder = save_tiny(tmp_path / "tiny", "llama")
    corpus = write_corpus(tmp_path / "corpus.txt")
    by_name = dress.evaluate(str(folder), text=str(corpus), seq_len=32, max_windows=4, device="cpu")
    model = AutoModelForCausalLM.from_pretrained(folder)
    by_object = dress.evaluate(model, byte_tokenizer(), text=str(corpus), seq_len=32, max_windows=4, device="cpu")
    assert by_name.n_windows == by_object.n_windows == 4
    assert by_name.ppl == pytest.approx(by_object.ppl, rel=1e-5)


def test_compare_from_a_dict(tmp_path):
    folder = save_tiny(tmp_path / "tiny", "llama")
    corpus = write_corpus(tmp_path / "corpus.txt")
    spec = {"base": {**FAST, "model": str(folder), "data.calib": str(corpus), "evaluate.source": str(corpus)},
            "variants": [{"label": "direct", "method": "direct"}], "ratios": [0.25]}
    results = dress.compare(spec, tmp_path / "cmp")
    assert results["entries"]["direct@0.25"]["ppl"] > 0 and (tmp_path / "cmp" / "results.md").is_file()
