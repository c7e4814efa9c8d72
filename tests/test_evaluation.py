"""dress eval / dress bench: perplexity arithmetic and windowing, offline lm-eval tasks, speed logic, CLI.

Everything here builds tiny models and a tiny tokenizer in-process; nothing downloads.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dress.adapters import parameter_count
from dress.errors import DressError
from dress.io.saving import weights_on_disk
from dress.evaluation.bench import (
    BenchSettings,
    Timing,
    benchmark,
    ideal_speedup,
    speed_ratios,
)
from dress.evaluation.perplexity import (
    default_seq_len,
    make_windows,
    perplexity,
    tokenize_once,
    window_nll_sum,
)
from dress.evaluation.zeroshot import TASKS, parse_tasks, render_bundled_tasks, zeroshot
from dress.reporting.tables import Column, format_table

# ---------------------------------------------------------------- fixtures


class BigramStub(nn.Module):
    """A 'language model' whose logits at position t are ``table[input_ids[t]]``: known logits."""

    def __init__(self, table: torch.Tensor, max_positions: int = 64):
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.config = SimpleNamespace(max_position_embeddings=max_positions)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, input_ids, use_cache=None):
        assert use_cache is False
        self.calls.append(tuple(input_ids.shape))
        return SimpleNamespace(logits=self.table[input_ids])


def hand_nll(table: torch.Tensor, windows: list[list[int]]) -> tuple[float, int]:
    """Sum of -log p(x_t | x_{t-1}) for t = 1..L-1 of every window, in plain Python floats."""
    total, count = 0.0, 0
    for w in windows:
        for prev, cur in zip(w[:-1], w[1:]):
            row = [float(v) for v in table[prev]]
            log_z = math.log(sum(math.exp(v) for v in row))
            total += log_z - row[cur]
            count += 1
    return total, count


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained in-process (any text encodes; ~300 ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["Question: How do you open a jar?\nAnswer: Twist the lid to the left.", "The cat sat on the mat."]
    tok.train_from_iterator(corpus * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def tiny_llama(vocab: int, hidden: int = 32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, vocab_size=vocab, max_position_embeddings=256,
        eos_token_id=0, bos_token_id=0, pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


# ---------------------------------------------------------------- perplexity


def test_perplexity_equals_hand_computation():
    torch.manual_seed(0)
    table = torch.randn(7, 7, dtype=torch.float64)
    model = BigramStub(table)
    ids = torch.tensor([0, 3, 5, 1, 6, 2, 2, 4, 0, 1, 5])  # 11 tokens
    res = perplexity(model, ids, seq_len=4, batch_size=2, progress=False)
    total, count = hand_nll(table, [[0, 3, 5, 1], [6, 2, 2, 4]])
    assert res.n_windows == 2 and res.n_tokens_scored == count == 6
    assert res.tokens_dropped == 3 and res.n_tokens_total == 11 and res.seq_len == 4
    assert res.nll_mean == pytest.approx(total / count, abs=1e-12)
    assert res.ppl == pytest.approx(math.exp(total / count), rel=1e-12)


def test_windowing_keeps_and_drops_as_documented():
    ids = torch.arange(10)
    windows, dropped = make_windows(ids, 4)
    assert windows.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and dropped == 2  # final partial window [8, 9] dropped
    windows, dropped = make_windows(torch.arange(12), 4)
    assert windows.shape == (3, 4) and dropped == 0
    windows, dropped = make_windows(ids, 4, max_windows=1)
    assert windows.tolist() == [[0, 1, 2, 3]] and dropped == 6
    with pytest.raises(DressError, match="fewer than one window"):
        make_windows(torch.arange(3), 4)
    with pytest.raises(DressError):
        make_windows(ids, 1)


def test_each_window_is_scored_without_the_previous_one_and_batching_does_not_matter():
    torch.manual_seed(1)
    table = torch.randn(5, 5)
    ids = torch.randint(0, 5, (23,))
    model = BigramStub(table)
    one = perplexity(model, ids, seq_len=5, batch_size=1, progress=False)
    assert model.calls == [(1, 5)] * 4
    model.calls.clear()
    three = perplexity(model, ids, seq_len=5, batch_size=3, progress=False)
    assert model.calls == [(3, 5), (1, 5)]
    assert one.nll_mean == pytest.approx(three.nll_mean, rel=1e-6)
    # the pair (last token of window 0, first of window 1) is never scored
    total, count = hand_nll(table.double(), [ids[i : i + 5].tolist() for i in range(0, 20, 5)])
    assert one.n_tokens_scored == count == 16
    assert one.nll_mean == pytest.approx(total / count, rel=1e-5)


def test_half_precision_logits_are_scored_in_float32():
    torch.manual_seed(2)
    logits = torch.randn(2, 6, 11)
    windows = torch.randint(0, 11, (2, 6))
    exact = window_nll_sum(logits, windows)
    half = window_nll_sum(logits.bfloat16(), windows)
    assert exact.dtype == torch.float64
    assert half.item() == pytest.approx(exact.item(), rel=1e-2)


def test_seq_len_defaults_and_limits():
    model = BigramStub(torch.zeros(3, 3), max_positions=16)
    assert default_seq_len(model) == 16
    assert default_seq_len(BigramStub(torch.zeros(3, 3), max_positions=8192)) == 2048
    with pytest.raises(DressError, match="max_position_embeddings"):
        perplexity(model, torch.zeros(64, dtype=torch.long), seq_len=32, progress=False)
    res = perplexity(model, torch.zeros(40, dtype=torch.long), progress=False)
    assert res.seq_len == 16 and res.n_windows == 2


def test_perplexity_on_a_real_tiny_model_matches_transformers_loss(tokenizer):
    model = tiny_llama(len(tokenizer))
    ids = tokenize_once(tokenizer, "The cat sat on the mat.\n\n" * 12)
    res = perplexity(model, ids, seq_len=32, batch_size=2, progress=False)
    windows, _ = make_windows(ids, 32)
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
    assert res.nll_mean == pytest.approx(sum(losses) / len(losses), rel=1e-5)


# ---------------------------------------------------------------- zero-shot


def test_parse_tasks():
    assert parse_tasks(None) == list(TASKS)
    assert parse_tasks("piqa, arc_easy,piqa") == ["piqa", "arc_easy"]
    with pytest.raises(DressError, match="unknown"):
        parse_tasks("piqa,mmlu")


def test_bundled_task_yamls_keep_the_standard_tasks_semantics(tmp_path):
    """Our offline YAMLs must ask lm-eval exactly what its standard tasks ask."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    render_bundled_tasks(list(TASKS), tmp_path)
    std_dir = Path(lm_eval.__file__).parent / "tasks"
    standard = {
        "piqa": "piqa/piqa.yaml", "winogrande": "winogrande/default.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
        "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
    }
    for name, rel in standard.items():
        ours, std = load_yaml(tmp_path / f"{name}.yaml"), load_yaml(std_dir / rel)
        data_file = Path(ours["dataset_kwargs"]["data_files"]["validation"])
        assert data_file.is_file(), data_file
        assert ours["task"] == f"dress_{name}" and ours["validation_split"] == "validation"
        for key in ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "process_docs", "metric_list"):
            a, b = ours.get(key), std.get(key)
            if callable(a) or callable(b):  # lm-eval's own helper functions, loaded twice
                assert inspect.getsource(a) == inspect.getsource(b), (name, key)
            else:
                assert a == b, (name, key)


def test_offline_lm_eval_task_runs_on_a_tiny_model(tokenizer):
    model = tiny_llama(len(tokenizer))
    res = zeroshot(model, tokenizer, ["piqa"], limit=4, batch_size=4, source="bundled")
    assert res.source == "bundled" and res.limit == 4
    (score,) = res.tasks
    assert score.task == "piqa" and score.n == 4
    assert 0.0 <= score.acc <= 1.0 and 0.0 <= score.acc_norm <= 1.0
    assert res.avg_acc == score.acc and res.avg_acc_norm == score.acc_norm
    assert res.to_dict()["avg_acc"] == score.acc


def test_hub_source_fails_fast_offline(monkeypatch, tokenizer):
    from dress.evaluation.zeroshot import resolve_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_source("auto") == "bundled"
    with pytest.raises(DressError, match="--tasks-source bundled"):
        resolve_source("hub")


# ---------------------------------------------------------------- speed


def test_ratio_and_ideal_arithmetic():
    assert ideal_speedup(100, 75) == pytest.approx(4 / 3)
    assert ideal_speedup(100, 50) == pytest.approx(2.0)
    r = speed_ratios(
        params_dense=100, params_pruned=75, prefill_dense_s=2.0, prefill_pruned_s=1.6,
        generate_dense_s=4.0, generate_pruned_s=2.0,
    )
    assert r["param_fraction_removed"] == pytest.approx(0.25)
    assert r["prefill_speedup"] == pytest.approx(1.25)
    assert r["generation_speedup"] == pytest.approx(2.0)  # same tokens in half the time: twice the throughput
    assert r["prefill_of_ideal"] == pytest.approx(1.25 / (4 / 3))
    assert r["generation_of_ideal"] == pytest.approx(1.5)


def test_timing_summary():
    t = Timing([3.0, 1.0, 2.0])
    s = t.summary(work=6)
    assert (s["median_s"], s["min_s"], s["max_s"]) == (2.0, 1.0, 3.0)
    assert (s["per_s_median"], s["per_s_min"], s["per_s_max"]) == (3.0, 2.0, 6.0)


def test_bench_runs_at_tiny_sizes(tmp_path):
    dense, pruned = tiny_llama(97, hidden=32), tiny_llama(97, hidden=24)
    settings = BenchSettings(prompt_len=16, gen_batch=2, gen_prompt_len=4, new_tokens=3, repeats=3, warmup=1)
    pruned.save_pretrained(tmp_path)
    out = benchmark(pruned, dense, settings, device="cpu", pruned_folder=tmp_path, progress=False)
    d, p = out["models"]["dense"], out["models"]["pruned"]
    assert len(d["prefill"]["samples_s"]) == 3 and len(p["generate"]["samples_s"]) == 3
    assert d["params"] == parameter_count(dense) and p["params"] == parameter_count(pruned)
    assert p["bytes_on_disk"] == weights_on_disk(tmp_path) > 0 and d["bytes_on_disk"] is None
    assert d["hidden_size"] == 32 and p["hidden_size"] == 24
    r = out["ratios"]
    assert r["ideal_speedup"] == pytest.approx(d["params"] / p["params"])
    assert r["prefill_speedup"] == pytest.approx(d["prefill"]["median_s"] / p["prefill"]["median_s"])
    assert r["generation_speedup"] == pytest.approx(p["generate"]["per_s_median"] / d["generate"]["per_s_median"])
    assert out["environment"]["torch_threads"] == torch.get_num_threads()
    assert p["attn_implementation"] and d["peak_process_bytes"] > 0
    json.dumps(out)  # JSON-ready


def test_bench_settings_defaults_and_validation():
    assert BenchSettings.defaults("cuda").prompt_len == 2048 and BenchSettings.defaults("cuda").gen_batch == 64
    assert BenchSettings.defaults("cuda").new_tokens == 128
    cpu = BenchSettings.defaults("cpu")
    assert cpu.prompt_len < 2048 and cpu.gen_batch < 64
    with pytest.raises(DressError, match="--repeats"):
        BenchSettings(8, 1, 1, 1, repeats=0, warmup=0).validate()


# ---------------------------------------------------------------- tables


def test_format_table_aligns_text_left_and_numbers_right():
    text = format_table(
        [{"name": "a", "x": 1.5, "n": 1000}, {"name": "long", "x": None, "n": 2}],
        ["name", ("x", "X", ".2f"), Column("n", "count", ",d")],
    )
    lines = text.splitlines()
    assert lines[0].split() == ["name", "X", "count"]
    assert lines[2].startswith("a ") and lines[2].endswith("1,000")
    assert lines[3].split() == ["long", "-", "2"]
    assert len({len(line) for line in lines[1:3]}) == 1


# ---------------------------------------------------------------- CLI, end to end


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    folder = tmp_path / "tiny"
    tiny_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_eval_zeroshot_and_ppl(model_dir, tmp_path, capsys):
    from dress.cli import main

    (model_dir / "dress.json").write_text(json.dumps({"source_model": "x"}))
    text = tmp_path / "eval.txt"
    text.write_text("The cat sat on the mat. " * 60)
    out_json = tmp_path / "out.json"
    rc = main([
        "eval", str(model_dir), "--ppl", str(text), "--seq-len", "32", "--batch-size", "2", "--zeroshot",
        "--tasks", "piqa", "--limit", "2", "--tasks-source", "bundled", "--json", str(out_json), "--no-progress",
    ])
    assert rc == 0
    screen = capsys.readouterr().out
    assert "PPL" in screen and "piqa" in screen and "average" in screen
    entry = json.loads(out_json.read_text())
    (ppl,) = entry["perplexity"]
    assert ppl["seq_len"] == 32 and ppl["n_tokens_scored"] == ppl["n_windows"] * 31
    assert entry["zeroshot"]["tasks"][0]["n"] == 2
    record = json.loads((model_dir / "dress.json").read_text())
    assert record["evaluations"][-1]["perplexity"] == entry["perplexity"]


def test_cli_bench(model_dir, tmp_path, tokenizer, capsys):
    from dress.cli import main

    pruned = tmp_path / "pruned"
    tiny_llama(len(tokenizer), hidden=24).save_pretrained(pruned)
    tokenizer.save_pretrained(pruned)
    (pruned / "dress.json").write_text(json.dumps({"source_model": str(model_dir)}))
    out_json = tmp_path / "bench.json"
    sizes = ["--prompt-len", "16", "--gen-batch", "2", "--gen-prompt-len", "4", "--new-tokens", "3", "--repeats", "2", "--warmup", "0"]
    rc = main(["bench", str(pruned), *sizes, "--device", "cpu", "--json", str(out_json), "--no-progress"])
    assert rc == 0
    screen = capsys.readouterr().out
    assert "prefill speedup" in screen and "batch 2, prompt 4, exactly 3 new tokens" in screen
    entry = json.loads(out_json.read_text())
    assert entry["against"] == str(model_dir)  # taken from dress.json
    assert entry["settings"]["prompt_len"] == 16 and entry["dtype"] == "float32"
    record = json.loads((pruned / "dress.json").read_text())
    assert record["benchmarks"][-1]["ratios"] == entry["ratios"]


def test_cli_bench_needs_a_dense_model(model_dir, capsys):
    from dress.cli import main

    assert main(["bench", str(model_dir), "--device", "cpu"]) == 1
    assert "--against" in capsys.readouterr().err
