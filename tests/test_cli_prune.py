"""`dress prune` end to end on tiny models, and its refusals of bad input."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import dress
from dress.cli import main
from tiny_models import FAST_FLAGS, sample_ids, save_tiny, write_corpus

FAST = FAST_FLAGS


@pytest.fixture()
def tiny(tmp_path):
    return save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "corpus.txt")


def prune(model, corpus, out, *extra):
    return main(["prune", str(model), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
                 *FAST, *extra])


def test_direct_prune_writes_a_stock_checkpoint_and_record(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    out = tmp_path / "out"
    assert prune(model_dir, corpus, out, "--method", "direct", "--selection", "last", "--no-rft", "--ratio", "0.25") == 0
    record = json.loads((out / "dress.json").read_text())
    assert record["hidden_size"] == {"before": 48, "after": 36}
    assert record["hidden_channels_removed"] == list(range(36, 48))
    assert record["parameters"]["after"] < record["parameters"]["before"]
    assert record["config"]["method"] == "direct" and "versions" in record
    stock = AutoModelForCausalLM.from_pretrained(out)
    assert stock.config.hidden_size == 36
    assert "hidden width 48 -> 36" in capsys.readouterr().out
    assert not list(tmp_path.glob(".out.partial-*"))


def test_outputs_get_the_permissions_of_ordinary_files(tiny, tmp_path):
    """Written through temporary files (0600/0700), outputs must still be readable by the group."""
    import os
    import stat

    model_dir, corpus = tiny
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert prune(model_dir, corpus, out, "--method", "direct", "--no-rft", "--no-eval") == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "dress.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o644
    # every file, the weights included (transformers stages them through a 0600 temporary file)
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in out.iterdir()} == \
        {f.name: oct(0o644) for f in out.iterdir()}


def test_dress_prune_end_to_end_reports_everything(tiny, tmp_path):
    model_dir, corpus = tiny
    out = tmp_path / "out"
    assert prune(model_dir, corpus, out, "--method", "dress", "--lam", "2") == 0
    record = json.loads((out / "dress.json").read_text())
    report = record["report"]
    assert len(report["regularization"]["lm_loss"]) == 3
    assert report["regularization"]["preserved_ratio"] <= 0.02  # lam=2 zeroes the groups by mid-run
    assert "prune_gap_nats" in report and len(report["recovery"]["lm_loss"]) == 2
    held = record["evaluation"]["held_out"]
    assert held["dense"]["seq_len"] == 32 and held["pruned"]["ppl"] > 0
    assert set(record["stages"]) >= {"regularize", "remove channels", "recover (lora)", "evaluate pruned"}
    reloaded = dress.load(out)
    assert reloaded.config.hidden_size == 36
    with torch.no_grad():
        assert torch.isfinite(reloaded(sample_ids()).logits).all()


@pytest.mark.parametrize("model_type", ["opt", "phi"])
def test_opt_and_phi_results_load_with_dress_load(tmp_path, model_type):
    model_dir = save_tiny(tmp_path / "tiny", model_type)
    corpus = write_corpus(tmp_path / "c.txt")
    out = tmp_path / "out"
    assert prune(model_dir, corpus, out, "--method", "direct", "--no-rft", "--selection", "weight") == 0
    assert json.loads((out / "dress.json").read_text())["loader"] == "dress"
    assert dress.load(out).get_input_embeddings().weight.shape[1] == 36


def test_existing_output_is_refused_without_overwrite(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert prune(model_dir, corpus, out, "--method", "direct", "--no-rft", "--no-eval") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert prune(model_dir, corpus, out, "--method", "direct", "--no-rft", "--no-eval", "--overwrite") == 0
    assert not (out / "keep.txt").exists() and (out / "dress.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "1.5"], "ratio"),
        (["--ratio", "0"], "ratio"),
        (["--ratio", "0.99"], "no valid hidden width"),
    ],
)
def test_bad_ratio_exits_with_advice_and_writes_nothing(tiny, tmp_path, capsys, args, message):
    model_dir, corpus = tiny
    out = tmp_path / "out"
    assert prune(model_dir, corpus, out, "--method", "direct", "--no-rft", "--no-eval", *args) == 1
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_missing_model_path_is_a_clear_error(tmp_path, capsys):
    assert main(["prune", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "smollm2-135m" in err


@pytest.mark.parametrize("flag", ["--calib", "--eval-source"])
def test_missing_text_file_fails_before_the_model_loads(tiny, tmp_path, capsys, flag):
    model_dir, corpus = tiny
    out = tmp_path / "out"
    assert prune(model_dir, corpus, out, "--method", "dress", flag, str(tmp_path / "typo.txt")) == 1
    captured = capsys.readouterr()
    assert "typo.txt does not exist" in captured.err
    assert "load model" not in captured.out
    assert not out.exists()


def test_unsupported_architecture_is_a_clear_error(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    from tiny_models import byte_tokenizer

    byte_tokenizer().save_pretrained(tmp_path / "gpt2")
    assert main(["prune", str(tmp_path / "gpt2"), "--out", str(tmp_path / "o"), "--no-eval", "--no-rft",
                 "--method", "direct", "--selection", "last"]) == 1
    err = capsys.readouterr().err
    assert "not supported" in err and "llama" in err
    assert not (tmp_path / "o").exists()


def test_hub_id_while_offline_fails_fast(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["prune", "some-org/some-model", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "smollm2-135m" in err


def test_unreachable_hub_fails_fast(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert main(["prune", "some-org/some-model", "--out", str(tmp_path / "o")]) == 1
    assert "cannot reach the Hugging Face hub" in capsys.readouterr().err


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"method": "dress", "regularise": {"lam": 1}}))
    assert main(["prune", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    assert "regularise" in capsys.readouterr().err


def test_the_output_has_a_model_card_from_its_record(tiny, tmp_path):
    import yaml

    model_dir, corpus = tiny
    out = tmp_path / "out"
    assert prune(model_dir, corpus, out, "--method", "direct", "--no-rft") == 0
    record = json.loads((out / "dress.json").read_text())
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-generation"
    assert "direct" in front["tags"] and "base_model" not in front  # a local folder is no hub id
    held = record["evaluation"]["held_out"]
    assert f"dense {held['dense']['ppl']:.2f} -> pruned {held['pruned']['ppl']:.2f}" in card
    assert "Hidden width**: 48 -> 36" in card and "AutoModelForCausalLM.from_pretrained" in card


def test_model_card_names_a_hub_base_model():
    from dress.io.card import model_card

    front = model_card({"source_model": "meta-llama/Llama-2-7b-hf", "method": "dress", "loader": "dress"})
    assert "base_model: meta-llama/Llama-2-7b-hf" in front and "library_name: dress" in front
    assert "dress.load(folder)" in front


def test_the_summary_prints_the_methods_own_lines_and_the_budget(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    capsys.readouterr()
    assert prune(model_dir, corpus, tmp_path / "a", "--lam", "2", "--ratio-of", "params") == 0
    printed = capsys.readouterr().out
    assert "preserved ratio of removed groups 0.0000" in printed  # DReSS's own line, from its record
    assert "budget       keep" in printed and "hidden width 36 of 48" in printed
    assert prune(model_dir, corpus, tmp_path / "b", "--method", "direct") == 0
    printed = capsys.readouterr().out
    assert "preserved ratio" not in printed and "budget " not in printed
