"""`dress compare` end to end on a tiny model: one draw and one evaluation for every method, the
table/JSON/plots, resume after an interruption, and refusals before any work starts."""

from __future__ import annotations

import json

import pytest

import dress.comparison.runner
import dress.pipeline
from dress.cli import main
from dress.comparison.report import preserved_caption, preserved_grid
from tiny_models import FAST_FLAGS, save_tiny, write_corpus

FAST = [*FAST_FLAGS, "--lam", "2"]

PRUNE_PREPARED = dress.pipeline.prune_prepared


@pytest.fixture()
def tiny(tmp_path):
    return save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "corpus.txt")


def compare(model, corpus, out, *extra):
    return main(["compare", str(model), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
                 "--ratios", "0.25", *FAST, *extra])


def count_prunes(monkeypatch, fail_on: str | None = None) -> list[str]:
    """Record every entry that really runs (by its method); raise on ``fail_on`` to simulate a crash."""
    calls: list[str] = []

    def counting(config, *args, **kwargs):
        calls.append(config.method)
        if config.method == fail_on:
            raise KeyboardInterrupt
        return PRUNE_PREPARED(config, *args, **kwargs)

    monkeypatch.setattr(dress.comparison.runner, "prune_prepared", counting)
    return calls


def test_compare_runs_two_methods_on_one_draw_and_writes_table_json_and_plots(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    assert compare(model_dir, corpus, out, "--methods", "direct,dress") == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert captured.err.count("[dress compare] calibration:") == 1  # one draw, shared by both methods

    results = json.loads((out / "results.json").read_text())
    assert results["order"] == ["direct@0.25", "dress@0.25"]
    dense, entries = results["dense"], results["entries"]
    assert dense["ppl"] > 0
    for key, method in (("direct@0.25", "direct"), ("dress@0.25", "dress")):
        entry = entries[key]
        assert entry["method"] == method and entry["ppl"] > 0
        assert entry["params"] < entry["params_dense"] == dense["params"]
        held = entry["record"]["evaluation"]["held_out"]
        assert held["pruned"]["n_tokens_scored"] == dense["eval"]["n_tokens_scored"] > 0  # one evaluation for all
    assert entries["dress@0.25"]["preserved_ratio"] <= 0.02 and entries["direct@0.25"]["preserved_ratio"] is None

    table = (out / "results.md").read_text()
    assert table.splitlines()[0].startswith("| Method")
    assert all(row in table for row in ("| Dense", "| direct", "| dress"))
    assert "one draw shared by all methods" in table
    assert table.rstrip("\n") in printed and "results.json" in printed  # the same table on screen
    assert (out / "ppl_vs_ratio.png").stat().st_size > 0
    assert (out / "heatmap_dress@0.25.png").stat().st_size > 0  # only regularized entries get one
    assert not (out / "heatmap_direct@0.25.png").exists()


def test_compare_resumes_after_an_interruption_and_skips_finished_entries(tiny, tmp_path, monkeypatch, capsys):
    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    calls = count_prunes(monkeypatch, fail_on="dress")
    assert compare(model_dir, corpus, out, "--methods", "direct,dress") == 130  # Ctrl-C during the 2nd entry
    assert "rerun the same command to continue" in capsys.readouterr().err
    assert calls == ["direct", "dress"]
    assert list(json.loads((out / "results.json").read_text())["entries"]) == ["direct@0.25"]

    calls = count_prunes(monkeypatch)
    dense_before = json.loads((out / "results.json").read_text())["dense"]
    assert compare(model_dir, corpus, out, "--methods", "direct,dress") == 0
    assert calls == ["dress"]  # the finished entry is not recomputed
    err = capsys.readouterr().err
    assert "2 entries, 1 already done" in err
    assert "evaluate dense" not in err  # nor the dense model: its stored evaluation is reused
    results = json.loads((out / "results.json").read_text())
    finished = results["entries"]
    assert set(finished) == {"direct@0.25", "dress@0.25"}
    assert results["dense"] == dense_before
    assert finished["dress@0.25"]["record"]["evaluation"]["held_out"]["dense"] == dense_before["eval"]

    calls = count_prunes(monkeypatch)
    assert compare(model_dir, corpus, out, "--methods", "direct,dress") == 0
    assert calls == []
    assert json.loads((out / "results.json").read_text())["entries"] == finished

    calls = count_prunes(monkeypatch)  # a changed setting changes the fingerprint: that entry reruns
    assert compare(model_dir, corpus, out, "--methods", "direct,dress", "--set", "regularize.lam=3") == 0
    assert sorted(calls) == ["direct", "dress"]  # the base config is part of every entry's fingerprint


def test_unknown_method_is_refused_before_any_work(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    assert compare(model_dir, corpus, out, "--methods", "dress,magic") == 1
    err = capsys.readouterr().err
    assert "magic" in err and "slicegpt" in err
    assert not out.exists()


def test_missing_calibration_file_is_refused_before_any_work(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    assert compare(model_dir, corpus, out, "--methods", "direct,dress", "--calib", str(tmp_path / "typo.txt")) == 1
    assert "typo.txt does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_sweep_makes_one_entry_per_value(tiny, tmp_path):
    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    assert compare(model_dir, corpus, out, "--methods", "dress", "--set", "regularize.lam=1,3",
                   "--no-rft") == 0
    entries = json.loads((out / "results.json").read_text())["entries"]
    assert list(entries) == ["dress@0.25[regularize.lam=1]", "dress@0.25[regularize.lam=3]"]
    lams = [e["record"]["config"]["regularize"]["lam"] for e in entries.values()]
    assert lams == [1, 3]


def test_fingerprints_of_a_fixed_comparison_are_pinned():
    """A resumed `dress compare` matches the fingerprints stored in results.json: these values were
    written by the code before comparison/ was split into modules. They change, rerunning every old
    entry, only when what goes into them changes (a new config field or default does too): update
    them then, on purpose."""
    from dress.comparison import CompareConfig, plan
    from dress.comparison.store import dense_fingerprint, entry_fingerprint

    spec = CompareConfig.model_validate({
        "base": {"model": "tiny/llama", "device": "cpu", "data.samples": 8, "data.seq_len": 32,
                 "evaluate.max_tokens": 256},
        "variants": [{"label": "direct", "method": "direct"},
                     {"label": "dress", "method": "dress", "set": {"regularize.lam": 2}}],
        "zeroshot": {"enabled": True, "limit": 2, "labels": ["direct"]},
    })
    entries = plan(spec)
    settings = {"zeroshot": spec.zeroshot, "speed": False}
    assert {e.key: entry_fingerprint(e, settings) for e in entries} == {
        "direct@0.25": "5104d86f50d2940e", "dress@0.25": "e8d2733dfeebf051"}
    assert dense_fingerprint(entries[0].config, settings) == "169f5ee2fe254e5b"


def test_heatmap_caption_names_the_largest_cell_and_the_tensors_outside_the_layers():
    by_tensor = {
        "model.embed_tokens.weight": 0.0,
        "model.layers.0.self_attn.q_proj.weight": 0.01,
        "model.layers.1.mlp.down_proj.weight": 0.25,
        "model.layers.1.self_attn.q_proj.weight": 0.0,
        "model.norm.weight": 0.5,
    }
    layers, matrices, grid = preserved_grid(by_tensor)
    assert layers == [0, 1] and matrices == ["q_proj", "down_proj"]
    assert grid[0][1] != grid[0][1]  # NaN: layer 0 has no down_proj entry
    assert preserved_caption(by_tensor) == "largest 0.2500 (layer 1 down_proj); embed_tokens 0.0000; norm 0.5000"


def test_rows_on_different_draws_are_reported_as_such(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    assert compare(model_dir, corpus, out, "--methods", "direct", "--set", "data.seed=0,1", "--no-rft") == 0
    assert capsys.readouterr().err.count("[dress compare] calibration:") == 2  # one draw per data block
    table = (out / "results.md").read_text()
    assert "2 draws" in table and "(seed 0)" in table and "(seed 1)" in table
    assert "one draw shared" not in table
    # the two rows differ only in the draw: one line with both perplexities, their mean and spread
    ppls = [e["ppl"] for e in json.loads((out / "results.json").read_text())["entries"].values()]
    across = table.split("Across calibration draws")[1]
    line = next(row for row in across.splitlines() if row.startswith("| direct"))
    assert f"0: {ppls[0]:.2f}, 1: {ppls[1]:.2f}" in line
    assert f"| {sum(ppls) / 2:.2f} | {abs(ppls[0] - ppls[1]):.2f} |" in line


def test_zero_shot_can_be_limited_to_some_rows_and_adding_a_row_reruns_only_that_row(tiny, tmp_path, monkeypatch):
    import dress.comparison.runner

    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    scored: list[int] = []

    def fake_zeroshot(model, tokenizer, zs):
        scored.append(sum(p.numel() for p in model.parameters()))
        return {"source": "bundled", "limit": zs.limit, "avg_acc": 0.5, "avg_acc_norm": 0.5,
                "tasks": [{"task": "piqa", "acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.5, "acc_norm_stderr": 0.1, "n": 2}]}

    monkeypatch.setattr(dress.comparison.runner, "_zeroshot", fake_zeroshot)

    def run(labels):
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"variants": [{"label": "direct", "method": "direct"},
                                                 {"label": "dress", "method": "dress"}],
                                    "zeroshot": {"enabled": True, "limit": 2, "labels": labels}}))
        return compare(model_dir, corpus, out, "--config", str(spec))

    calls = count_prunes(monkeypatch)
    assert run(["direct"]) == 0
    assert calls == ["direct", "dress"] and len(scored) == 2  # the dense row and direct; not dress
    entries = json.loads((out / "results.json").read_text())["entries"]
    assert "zeroshot" in entries["direct@0.25"] and "zeroshot" not in entries["dress@0.25"]
    table = (out / "results.md").read_text()
    assert "for direct (other rows: '-')" in table
    assert "| 50.00 ±10.0 | 50.00 ±10.0 |" in table  # accuracy with lm-eval's standard error, task and mean

    calls = count_prunes(monkeypatch)
    assert run(["direct", "dress"]) == 0
    assert calls == ["dress"]  # direct was scored under the same protocol: kept
    assert "zeroshot" in json.loads((out / "results.json").read_text())["entries"]["dress@0.25"]

    assert run(["nope"]) == 1  # a label that names no variant is refused


def test_speed_and_saved_models_come_from_the_same_pruned_model(tiny, tmp_path):
    from dress.io.loading import load_model

    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    assert compare(model_dir, corpus, out, "--methods", "direct", "--no-rft", "--speed", "--save-models") == 0
    entry = json.loads((out / "results.json").read_text())["entries"]["direct@0.25"]
    assert entry["speed"]["ratios"]["prefill_speedup"] > 0  # timed after the save, which it must not disturb
    saved = load_model(str(out / "models" / "direct@0.25")).model
    assert sum(p.numel() for p in saved.parameters()) == entry["params"]
    assert next(saved.parameters()).dtype == __import__("torch").float32


def test_a_method_that_cannot_prune_the_model_gets_a_not_applicable_row_and_the_others_run(tmp_path, monkeypatch):
    """SliceGPT cannot rotate Gemma3's stream (post-sub-block norms): its row says why, direct runs,
    and a rerun neither retries it nor reruns direct."""
    model_dir, corpus = save_tiny(tmp_path / "gemma", "gemma3_text"), write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "cmp"
    calls = count_prunes(monkeypatch)
    assert compare(model_dir, corpus, out, "--methods", "slicegpt,direct") == 0
    assert calls == ["direct"]
    entries = json.loads((out / "results.json").read_text())["entries"]
    assert "post-attention" in entries["slicegpt@0.25"]["not_applicable"]
    assert entries["direct@0.25"]["ppl"] > 0
    table = (out / "results.md").read_text()
    assert "| slicegpt | 25% | n/a | n/a |" in table and "n/a: slicegpt does not support gemma3_text" in table
    assert compare(model_dir, corpus, out, "--methods", "slicegpt,direct") == 0
    assert calls == ["direct"]


def test_a_parameter_budget_gives_every_method_its_own_knob_and_the_table_shows_the_distance(tiny, tmp_path):
    model_dir, corpus = tiny
    out = tmp_path / "cmp"
    assert compare(model_dir, corpus, out, "--methods", "direct,shortgpt", "--ratio-of", "params", "--no-rft") == 0
    entries = json.loads((out / "results.json").read_text())["entries"]
    for key in ("direct@0.25", "shortgpt@0.25"):
        budget = entries[key]["record"]["parameter_budget"]
        assert budget["share"] == 0.25 and budget["planned_params"] == entries[key]["params"]
        assert budget["target_params"] == int(entries[key]["params_dense"] * 0.75)
    assert "layers removed" in entries["shortgpt@0.25"]["record"]["parameter_budget"]["knob"]
    table = (out / "results.md").read_text()
    assert "vs budget" in table.splitlines()[0]
    assert "(hidden width" in table and "layers removed)" in table


def test_every_entry_runs_with_its_preset_applied_like_dress_prune(tiny, tmp_path, monkeypatch):
    """`dress compare` resolves each entry as `dress prune` does (preset, bf16, memory check) before the
    model loads; before, a `preset: paper` in an experiment file was silently ignored."""
    import dress.presets

    model_dir, corpus = tiny
    monkeypatch.setitem(dress.presets.COMMON_PRESETS, "cpu-demo", {"evaluate": {"max_tokens": 128}})
    out = tmp_path / "cmp"
    assert main(["compare", str(model_dir), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
                 "--ratios", "0.25", "--methods", "direct", "--samples", "8", "--seq-len", "32", "--no-rft",
                 "--eval-seq-len", "32", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["entries"]["direct@0.25"]
    assert entry["record"]["config"]["preset"] == "cpu-demo"
    assert entry["record"]["config"]["evaluate"]["max_tokens"] == 128  # the preset's value, not the default 32768
    assert results["dense"]["eval"]["n_tokens_scored"] <= 128
