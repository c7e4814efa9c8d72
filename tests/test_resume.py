"""`dress prune --resume`: it continues only the same run, reuses recorded work, and loads
checkpoints that are safetensors + JSON (never pickles)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dress.cli import main
from tiny_models import FAST_SETTINGS, flags_of, save_tiny, tiny_model, write_corpus

FAST = [*flags_of({**FAST_SETTINGS, "regularize.steps": 4}), "--method", "dress", "--lam", "2", "--checkpoint-every", "1"]


@pytest.fixture()
def tiny(tmp_path):
    return save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "corpus.txt")


def prune(model, corpus, out, *extra):
    return main(["prune", str(model), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
                 *FAST, *extra])


def interrupt_after_checkpoints(monkeypatch, n: int) -> None:
    """Let ``n`` training checkpoints be written, then stop the run as Ctrl-C (or a crash) would."""
    import dress.training.loop as training

    real = training._checkpoint
    calls = {"n": 0}

    def checkpoint(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= n:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_checkpoint", checkpoint)


def interrupted(monkeypatch, model, corpus, out, n: int = 2, *extra) -> Path:
    """Run until ``n`` more checkpoints are written, then stop; returns the checkpoint folder."""
    with monkeypatch.context() as m:
        interrupt_after_checkpoints(m, n)
        assert prune(model, corpus, out, *extra) == 130
    assert not out.exists()
    return out.with_name(out.name + ".checkpoints")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_resume_finishes_with_the_uninterrupted_weights_and_cleans_up(tiny, tmp_path, monkeypatch):
    model, corpus = tiny
    assert prune(model, corpus, tmp_path / "ref") == 0
    out = tmp_path / "out"
    work = interrupted(monkeypatch, model, corpus, out, 2)
    assert json.loads((work / "regularize" / "state.json").read_text())["step"] == 2
    assert prune(model, corpus, out, "--resume") == 0
    ref, got = weights(tmp_path / "ref"), weights(out)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert not work.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--ratio", "0.5"], "ratio: 0.25 in the checkpoint, 0.5 now"),
        (["--lam", "3"], "regularize.lam: 2.0 in the checkpoint, 3.0 now"),
        (["--selection", "weight"], "selection: \"activation\" in the checkpoint, \"weight\" now"),
        (["--seed", "7"], "seed: 0 in the checkpoint, 7 now"),
        (["--data-seed", "3"], "data.seed: 0 in the checkpoint, 3 now"),
    ],
)
def test_resume_with_other_settings_is_refused_naming_what_differs(tiny, tmp_path, monkeypatch, capsys, change, named):
    model, corpus = tiny
    out = tmp_path / "out"
    work = interrupted(monkeypatch, model, corpus, out, 1)
    capsys.readouterr()
    assert prune(model, corpus, out, "--resume", *change) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --resume refused") and named in err and "--overwrite" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (work / "run.json").is_file() and not out.exists()  # nothing was touched


def test_resume_with_another_calibration_file_or_model_is_refused(tiny, tmp_path, monkeypatch, capsys):
    model, corpus = tiny
    out = tmp_path / "out"
    interrupted(monkeypatch, model, corpus, out, 1)
    corpus.write_text(corpus.read_text() + "\n\none more document about a red cat.\n")  # same path, other text
    capsys.readouterr()
    assert prune(model, corpus, out, "--resume") == 1
    assert "calibration_file_sha256" in capsys.readouterr().err
    write_corpus(corpus)  # the original text again
    save_tiny(model, "llama", seed=5)  # the same folder now holds other weights... of the same size
    (model / "config.json").write_text((model / "config.json").read_text().replace('"rms_norm_eps": 1e-06',
                                                                                 '"rms_norm_eps": 1e-05'))
    assert prune(model, corpus, out, "--resume") == 1
    assert "model.config_sha256" in capsys.readouterr().err


def test_evaluation_settings_may_change_on_resume(tiny, tmp_path, monkeypatch):
    model, corpus = tiny
    out = tmp_path / "out"
    interrupted(monkeypatch, model, corpus, out, 1)
    assert prune(model, corpus, out, "--resume", "--eval-tokens", "128", "--checkpoint-every", "2") == 0


def test_resume_of_a_finished_run_with_the_same_settings_succeeds_and_changes_nothing(tiny, tmp_path, capsys):
    """A retry loop on a preemptible machine whose kill landed after the output was in place."""
    model, corpus = tiny
    out = tmp_path / "out"
    assert prune(model, corpus, out) == 0
    before = (out / "dress.json").read_text()
    weights = (out / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert prune(model, corpus, out, "--resume") == 0
    assert "already finished with these settings" in capsys.readouterr().err
    assert (out / "dress.json").read_text() == before and (out / "model.safetensors").stat().st_mtime_ns == weights


def test_resume_on_a_finished_output_with_other_settings_is_refused_unless_overwrite(tiny, tmp_path, capsys):
    model, corpus = tiny
    out = tmp_path / "out"
    assert prune(model, corpus, out) == 0
    before = (out / "dress.json").read_text()
    capsys.readouterr()
    assert prune(model, corpus, out, "--resume", "--ratio", "0.5") == 1
    err = capsys.readouterr().err
    assert "already a finished output made with other settings (ratio: 0.25 there, 0.5 now" in err
    assert "--overwrite" in err
    assert (out / "dress.json").read_text() == before
    assert prune(model, corpus, out, "--resume", "--overwrite", "--ratio", "0.5") == 0


def test_leftover_checkpoints_need_resume_or_overwrite(tiny, tmp_path, monkeypatch, capsys):
    model, corpus = tiny
    out = tmp_path / "out"
    work = interrupted(monkeypatch, model, corpus, out, 1)
    capsys.readouterr()
    assert prune(model, corpus, out) == 1
    assert "--resume to continue it" in capsys.readouterr().err and work.exists()
    assert prune(model, corpus, out, "--overwrite") == 0
    assert out.is_dir() and not work.exists()


def test_resume_reuses_the_recorded_dense_evaluation_and_channel_choice(tiny, tmp_path, monkeypatch):
    import dress.methods.dress.method as width

    model, corpus = tiny
    out = tmp_path / "out"
    work = interrupted(monkeypatch, model, corpus, out, 2)
    run = json.loads((work / "run.json").read_text())
    assert set(run["recorded"]) == {"dense_evaluation", "channels_removed"}
    assert run["fingerprint"]["channels_removed"] == run["recorded"]["channels_removed"]["value"]
    run["recorded"]["dense_evaluation"]["value"]["ppl"] = 12345.0  # a marker: recomputing would lose it
    (work / "run.json").write_text(json.dumps(run))

    def no_scoring(*args, **kwargs):
        raise AssertionError("the channels were chosen again")

    monkeypatch.setattr(width, "select_channels", no_scoring)
    assert prune(model, corpus, out, "--resume") == 0
    record = json.loads((out / "dress.json").read_text())
    assert record["evaluation"]["held_out"]["dense"]["ppl"] == 12345.0
    assert record["hidden_channels_removed"] == run["recorded"]["channels_removed"]["value"]


def test_optimizer_state_only_at_the_interval_and_finished_stages_keep_weights_only(tiny, tmp_path, monkeypatch):
    model, corpus = tiny
    out = tmp_path / "out"
    work = interrupted(monkeypatch, model, corpus, out, 3)  # step 3 of 4: an interval checkpoint
    mid = json.loads((work / "regularize" / "state.json").read_text())
    assert not mid["final"] and mid["step"] == 3 and mid["optimizer"]["param_groups"]
    assert [k for k in load_file(work / "regularize" / mid["files"]["extra"]) if k.startswith("optim/")]
    assert sorted(p.name for p in (work / "regularize").iterdir()) == sorted(["state.json", *mid["files"].values()])

    work = interrupted(monkeypatch, model, corpus, out, 2, "--resume")  # step 4 (end), then recovery's end
    for stage, steps in (("regularize", 4), ("recovery", 2)):
        final = json.loads((work / stage / "state.json").read_text())
        assert final["final"] and final["step"] == steps and final["optimizer"] is None
        extra = load_file(work / stage / final["files"]["extra"])
        assert not [k for k in extra if k.startswith("optim/")] and "rng/torch" in extra
        assert sorted(p.name for p in (work / stage).iterdir()) == sorted(["state.json", *final["files"].values()])
    assert prune(model, corpus, out, "--resume") == 0
    assert not work.exists()


# ---- no pickles ------------------------------------------------------------------------------
class _Payload:
    """Unpickling this creates the file ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_a_checkpoint_never_unpickles(tiny, tmp_path, monkeypatch, capsys):
    model, corpus = tiny
    out = tmp_path / "out"
    work = interrupted(monkeypatch, model, corpus, out, 2)
    marker = tmp_path / "pwned"
    for name in ("state.pt", "optimizer.pt", "rng_state.pth", "pytorch_model.bin", "scheduler.pt"):
        (work / "regularize" / name).write_bytes(pickle.dumps(_Payload(marker)))
    with monkeypatch.context() as m:  # any pickle load on the resume path fails loudly
        def refuse(*args, **kwargs):
            raise AssertionError("a pickle was loaded")

        m.setattr(torch, "load", refuse)
        m.setattr(pickle, "load", refuse)
        m.setattr(pickle, "loads", refuse)
        assert prune(model, corpus, out, "--resume") == 0
    assert not marker.exists()


def test_a_pickled_checkpoint_is_refused_not_loaded(tiny, tmp_path, capsys):
    model, corpus = tiny
    out = tmp_path / "out"
    work = out.with_name("out.checkpoints")
    (work / "regularize").mkdir(parents=True)
    marker = tmp_path / "pwned"
    (work / "regularize" / "state.pt").write_bytes(pickle.dumps(_Payload(marker)))
    assert prune(model, corpus, out, "--resume") == 1
    err = capsys.readouterr().err
    assert "no longer loads pickles" in err and "Traceback" not in err
    assert not marker.exists() and not out.exists()


def test_checkpoint_round_trip_keeps_tied_weights_optimizer_and_rng(tmp_path):
    from dress.training.checkpoint import (
        flatten_optimizer,
        load_into,
        optimizer_param_names,
        read_checkpoint,
        write_checkpoint,
    )

    model = tiny_model("llama")  # tied embeddings: one tensor under two names
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.arange(8)[None], labels=torch.arange(8)[None]).loss.backward()
    opt.step()
    tensors, description = flatten_optimizer(opt.state_dict(), optimizer_param_names(model, opt))
    torch.manual_seed(123)
    write_checkpoint(tmp_path, step=1, model_state=model.state_dict(), optimizer_tensors=tensors,
                     optimizer_description=description, history={"lm_loss": [1.0]})
    expected_draw = torch.rand(3)
    other = tiny_model("llama", seed=9)
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)
    load_into(other, opt2, read_checkpoint(tmp_path))
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG state came back
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    assert other.lm_head.weight.data_ptr() == other.model.embed_tokens.weight.data_ptr()  # still tied
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for i in s1:
        for key in s1[i]:
            assert torch.equal(s1[i][key], s2[i][key]), (i, key)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".safetensors", ".safetensors"]
