"""Every bad input to `dress prune` gets one `error:` line that says what to do, exit status 1, no
traceback, and nothing half-written (no output folder, no temporary sibling). Tiny models only.
docs/robustness.md lists these inputs with their messages."""

from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from dress.cli import main
from tiny_models import byte_tokenizer, FAST_FLAGS, save_tiny, tiny_model, write_corpus

QUICK = FAST_FLAGS
NO_TEXT = ["--method", "direct", "--selection", "last", "--no-rft", "--no-eval", "--device", "cpu"]


@pytest.fixture()
def tiny(tmp_path):
    return save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "corpus.txt")


def refused(capsys, argv: list[str], out: Path, *expected: str) -> str:
    """Run ``dress`` with ``argv``; it must fail with one ``error:`` line naming ``expected`` and
    leave neither ``out`` nor a temporary sibling of it."""
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not _progress(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*")), list(out.parent.iterdir())
    _report(argv, lines[0])
    return lines[0]


def _report(argv: list[str], line: str) -> None:
    """With DRESS_BAD_INPUT_REPORT=FILE, append (test, message) as a JSON line (docs/robustness.md)."""
    path = os.environ.get("DRESS_BAD_INPUT_REPORT")
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "message": line}) + "\n")


def _progress(line: str) -> bool:
    """Progress logging (``[dress] stage ...``) and tqdm bars on stderr, which are not messages."""
    return line.startswith("[dress") or bool(re.search(r"\d+%\|", line)) or "it/s]" in line or "window/s]" in line


def prune_args(model, out, *extra) -> list[str]:
    return ["prune", str(model), "--out", str(out), *extra]


# ---- the model ----------------------------------------------------------------------------------
def test_missing_model_folder(tmp_path, capsys):
    refused(capsys, prune_args(tmp_path / "nope", tmp_path / "o"), tmp_path / "o", "does not exist", "smollm2-135m")


def test_folder_without_config(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    refused(capsys, prune_args(tmp_path / "m", tmp_path / "o"), tmp_path / "o", "no config.json")


@pytest.mark.parametrize("content", ['{"model_type": "llama", ', "\x00\xff\xfe", "[1, 2]"])
def test_broken_config_json(tiny, tmp_path, capsys, content):
    model, _ = tiny
    (model / "config.json").write_bytes(content.encode("latin-1"))
    refused(capsys, prune_args(model, tmp_path / "o", *NO_TEXT), tmp_path / "o", "config.json", "restore the model folder")


def test_folder_without_weights(tiny, tmp_path, capsys):
    model, _ = tiny
    (model / "model.safetensors").unlink()
    refused(capsys, prune_args(model, tmp_path / "o", *NO_TEXT), tmp_path / "o", "cannot load the weights")


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_damaged_weights_file(tiny, tmp_path, capsys, damage):
    model, _ = tiny
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * 1000)
    refused(capsys, prune_args(model, tmp_path / "o", *NO_TEXT), tmp_path / "o",
            f"{weights} is damaged", "restore the model folder")


@pytest.mark.parametrize("change", [{"intermediate_size": 64}, {"num_hidden_layers": 2}, {"num_hidden_layers": 4}])
def test_weights_that_do_not_match_the_config(tiny, tmp_path, capsys, change):
    """Other shapes, tensors the config has no place for, and places no tensor fills (which transformers
    would leave randomly initialised with only a warning) are all refused."""
    model, _ = tiny
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **change}))
    refused(capsys, prune_args(model, tmp_path / "o", *NO_TEXT), tmp_path / "o",
            f"the weights in {model / 'model.safetensors'} do not match {model / 'config.json'}")


def test_damaged_weights_of_a_dress_checkpoint_are_named(tmp_path, capsys):
    """OPT/Phi width-pruned outputs load through dress's own loader: the same errors there."""
    source = save_tiny(tmp_path / "opt", "opt")
    pruned = tmp_path / "pruned"
    assert main(prune_args(source, pruned, *NO_TEXT)) == 0
    weights = pruned / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    refused(capsys, prune_args(pruned, tmp_path / "o", *NO_TEXT), tmp_path / "o", f"{weights} is damaged")


def test_unsupported_architecture_is_refused_before_any_weight_is_read(tmp_path, capsys, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    import dress.io.loading

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(folder)
    (folder / "model.safetensors").unlink()  # no weights at all: the config alone must decide

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(dress.io.loading, "load_checkpoint", no_loading)
    refused(capsys, prune_args(folder, tmp_path / "o", *NO_TEXT), tmp_path / "o",
            "'gpt2'", "not supported", "llama")


# ---- the ratio ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ratio", "message"),
    [("1.5", "less than 1"), ("0", "greater than 0"), ("-0.2", "greater than 0"), ("1", "less than 1"),
     ("nan", "strictly between 0 and 1"), ("inf", "strictly between 0 and 1"),
     ("0.99", "no valid hidden width")],  # 0.99 of 48 channels leaves less than one per head
)
def test_ratio_outside_the_open_interval(tiny, tmp_path, capsys, ratio, message):
    model, _ = tiny
    refused(capsys, prune_args(model, tmp_path / "o", *NO_TEXT, "--ratio", ratio), tmp_path / "o", "ratio", message) \
        if message != "no valid hidden width" else \
        refused(capsys, prune_args(model, tmp_path / "o", *NO_TEXT, "--ratio", ratio), tmp_path / "o", message)


# ---- calibration text ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "does not exist"),
        ("empty.txt", b"", "holds no text"),
        ("blank.txt", b"\n\n   \n", "holds no text"),
        ("short.txt", b"a cat sat.", "Use fewer --samples"),
        ("binary.txt", bytes(range(256)) * 4, "not UTF-8 text"),
        ("nul.txt", b"text\x00with a NUL", "binary"),
        ("broken.jsonl", b'{"text": "a"}\nnot json\n', "broken.jsonl:2 is not a JSON object"),
        ("notext.jsonl", b'{"body": "a"}\n', "no string field"),
        ("unknown.csv", b"a,b\n", "unknown text source"),
    ],
)
def test_bad_calibration_file(tiny, tmp_path, capsys, name, content, message):
    model, _ = tiny
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    refused(capsys, prune_args(model, tmp_path / "o", *QUICK, "--calib", str(path), "--no-eval"), tmp_path / "o", message)


# ---- the output ---------------------------------------------------------------------------------
def test_existing_output(tiny, tmp_path, capsys):
    model, _ = tiny
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    capsys.readouterr()
    assert main(prune_args(model, out, *NO_TEXT)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and (out / "mine.txt").read_text() == "keep"


def test_a_full_disk_while_writing_keeps_the_previous_output(tiny, tmp_path, capsys, monkeypatch):
    import transformers.modeling_utils

    model, _ = tiny
    out = tmp_path / "o"
    assert main(prune_args(model, out, *NO_TEXT)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)  # save_pretrained's writer
    capsys.readouterr()
    assert main(prune_args(model, out, *NO_TEXT, "--ratio", "0.5", "--overwrite")) == 1
    err = capsys.readouterr().err
    assert "error: writing" in err and "No space left on device" in err and "previous" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old output, whole
    assert not list(tmp_path.glob(".o.*"))


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tiny, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    import dress.training.checkpoint as ts

    model, corpus = tiny
    out = tmp_path / "o"
    real, calls = safetensors.torch.save_file, {"n": 0}

    def fills_up(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (model + extra) fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_up)
    capsys.readouterr()
    argv = prune_args(model, out, *QUICK, "--calib", str(corpus), "--no-eval", "--checkpoint-every", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "could not write the training checkpoint" in err and "--resume" in err
    work = tmp_path / "o.checkpoints" / "regularize"
    state = json.loads((work / ts.STATE_JSON).read_text())
    assert state["step"] == 1 and sorted(p.name for p in work.iterdir()) == sorted(["state.json", *state["files"].values()])
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main([*argv, "--resume"]) == 0


# ---- training -----------------------------------------------------------------------------------
def test_diverging_training_stops_with_advice_and_keeps_the_last_good_checkpoint(tiny, tmp_path, capsys, monkeypatch):
    import dress.training.loop as training

    model, corpus = tiny
    real = training.learning_rate
    monkeypatch.setattr(training, "learning_rate", lambda step, s: math.nan if step >= 2 else real(step, s))
    out = tmp_path / "o"
    line = refused(capsys, prune_args(model, out, *QUICK, "--calib", str(corpus), "--no-eval", "--checkpoint-every", "1"),
                   out, "regularize", "diverged", "last good checkpoint (step 2)", "--lr")
    work = tmp_path / "o.checkpoints" / "regularize"
    from safetensors.torch import load_file

    state = json.loads((work / "state.json").read_text())
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in load_file(work / state["files"]["model"]).values())
    assert line


# ---- tokenizers ---------------------------------------------------------------------------------
def test_pruning_without_text_needs_no_tokenizer(tmp_path, capsys):
    folder = tmp_path / "m"
    tiny_model("llama").save_pretrained(folder)  # weights and config, no tokenizer files
    out = tmp_path / "o"
    assert main(prune_args(folder, out, *NO_TEXT)) == 0
    assert json.loads((out / "dress.json").read_text())["hidden_size"]["after"] == 36
    assert not (out / "tokenizer.json").exists()


def test_pruning_without_text_keeps_the_tokenizer_files_it_cannot_read(tmp_path):
    folder = tmp_path / "m"
    tiny_model("llama").save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes(b"\x0a\x03abc")  # unreadable here, copied verbatim
    out = tmp_path / "o"
    assert main(prune_args(folder, out, *NO_TEXT)) == 0
    assert (out / "tokenizer.model").read_bytes() == b"\x0a\x03abc"


def test_text_without_a_tokenizer_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "m"
    tiny_model("llama").save_pretrained(folder)
    corpus = write_corpus(tmp_path / "c.txt")
    refused(capsys, prune_args(folder, tmp_path / "o", *QUICK, "--calib", str(corpus), "--no-eval"), tmp_path / "o",
            "cannot read the tokenizer", "--no-rft --no-eval")


def test_a_sentencepiece_only_llama_folder_loads(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    corpus = write_corpus(tmp_path / "c.txt")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=60,
                                   model_type="bpe", minloglevel=2)
    folder = tmp_path / "m"
    config = tiny_model("llama").config
    config.vocab_size = 60
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes((tmp_path / "sp.model").read_bytes())  # the only tokenizer file
    out = tmp_path / "o"
    assert main(prune_args(folder, out, *QUICK, "--calib", str(corpus), "--eval-source", str(corpus),
                           "--method", "direct", "--no-rft")) == 0
    record = json.loads((out / "dress.json").read_text())
    assert record["evaluation"]["held_out"]["pruned"]["ppl"] > 0


# ---- the hub ------------------------------------------------------------------------------------
def _hub_error(cls, message: str):
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("GatedRepoError", ("is gated", "accept its licence", "hf auth login")),
        ("RepositoryNotFoundError", ("no model", "check the spelling", "private", "hf auth login")),
        ("LocalEntryNotFoundError", ("cannot reach the Hugging Face hub", "bundled model")),
    ],
)
def test_hub_errors_come_from_the_hub_client(tmp_path, capsys, monkeypatch, error, expected):
    import huggingface_hub
    import huggingface_hub.errors as hub_errors

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = {}

    def download(repo_id, filename, **kwargs):
        seen["call"] = (repo_id, filename, kwargs.get("token"))
        raise _hub_error(getattr(hub_errors, error), f"{error} for {repo_id}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    refused(capsys, prune_args("some-org/private-model", tmp_path / "o"), tmp_path / "o", "some-org/private-model",
            *expected)
    assert seen["call"] == ("some-org/private-model", "config.json", None)  # token=None: the client sends the user's


def test_hub_id_while_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    refused(capsys, prune_args("some-org/some-model", tmp_path / "o"), tmp_path / "o", "HF_HUB_OFFLINE", "smollm2-135m")


def test_malformed_model_names(tmp_path, capsys):
    refused(capsys, prune_args("a/b/c", tmp_path / "o"), tmp_path / "o", "does not exist")
    refused(capsys, prune_args("no-such-model", tmp_path / "o"), tmp_path / "o", "neither an existing folder")


def test_a_file_given_as_model(tmp_path, capsys):
    (tmp_path / "weights.bin").write_bytes(b"x")
    refused(capsys, prune_args(tmp_path / "weights.bin", tmp_path / "o"), tmp_path / "o", "is a file")


def test_opt_and_gemma_folders_prune_without_a_tokenizer_too(tmp_path):
    for kind in ("opt", "gemma3_text"):
        folder = tmp_path / kind
        tiny_model(kind).save_pretrained(folder)
        assert main(prune_args(folder, tmp_path / f"o-{kind}", *NO_TEXT)) == 0


def test_byte_tokenizer_fixture_still_saves(tmp_path):
    """Guard for the fixtures above: the byte tokenizer round-trips through save_pretrained."""
    byte_tokenizer().save_pretrained(tmp_path / "t")
    assert (tmp_path / "t" / "tokenizer.json").is_file()


def test_a_method_that_cannot_prune_the_family_is_refused_before_the_dense_evaluation(tmp_path, capsys, monkeypatch):
    import dress.pipeline

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the dense model was evaluated before the refusal")

    monkeypatch.setattr(dress.pipeline, "_held_out_ppl", no_evaluation)
    folder, corpus = save_tiny(tmp_path / "gemma", "gemma3_text"), write_corpus(tmp_path / "corpus.txt")
    refused(capsys, prune_args(folder, tmp_path / "o", "--method", "slicegpt", "--calib", str(corpus),
                               "--eval-source", str(corpus), *QUICK),
            tmp_path / "o", "--method slicegpt does not support gemma3_text", "Choose another --method")
