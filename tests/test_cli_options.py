"""The CLI is generated from the typed config: every field is a flag with help and its default,
errors name the flag the user typed, and the method registry feeds every list of methods."""

from __future__ import annotations

import argparse

import pytest

from dress.cli import build_parser, main
from dress.cli.options import add_config_options, overrides
from dress.config import PruneConfig, config_fields, flag_of, validate_config
from dress.errors import DressError
from dress.methods import aliases, get, methods


def test_every_field_has_a_description_and_a_unique_flag():
    fields = list(config_fields())
    assert len(fields) > 40
    missing = [f.dotted for f in fields if not (f.info.description or "").strip()]
    assert missing == []
    flags = [f.flag for f in fields if f.flag]
    assert len(flags) == len(set(flags))


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in config_fields():
        if field.flag:
            assert field.flag in text, field.flag
    assert "(default: 1.5)" in text  # --lam
    assert "(default: 16)" in text  # --score-samples: the real default, not "all"
    assert text.count("(default:") >= len([f for f in config_fields() if f.flag])


@pytest.mark.parametrize("flag, value", [
    ("--rft-steps", "-1"), ("--eval-seq-len", "4"), ("--steps", "-3"), ("--trsp-steps1", "-1"),
    ("--lora-rank", "0"), ("--data-seed", "x"),
])
def test_a_validation_error_names_the_flag_typed(tmp_path, capsys, flag, value):
    try:
        code = main(["prune", "--out", str(tmp_path / "o"), flag, value])
    except SystemExit as exit_:  # a value argparse itself rejects: its usage error, status 2
        code = exit_.code
    err = capsys.readouterr().err
    assert code in (1, 2) and flag in err, err
    assert not (tmp_path / "o").exists()


def test_every_old_flag_still_parses():
    old = ("--method --ratio --selection --device --seed --bf16 --no-bf16 --calib --samples --seq-len --split "
           "--data-seed --norm --lam --steps --lr --warmup-steps --batch-size --grad-accum --gradient-checkpointing "
           "--checkpoint-every --no-rft --rft-mode --rft-steps --rft-lr --rft-batch-size --rft-grad-accum --lora-rank "
           "--lora-alpha --lora-targets --no-eval --eval-source --eval-seq-len --eval-tokens --layers --score-samples "
           "--score-batch-size --trsp-lam1 --trsp-lam2 --trsp-steps1 --trsp-steps2 --trsp-shrink2 --trsp-train1 "
           "--trsp-lr --trsp-gate-lr --trsp-batch-size --trsp-grad-accum --distill --distill-temperature").split()
    parser = build_parser()
    prune = next(a for a in parser._subparsers._actions if isinstance(a, argparse._SubParsersAction)).choices["prune"]
    known = {s for action in prune._actions for s in action.option_strings}
    assert [f for f in old if f not in known] == []


def test_dress_knobs_have_prefixed_flags_and_the_old_ones_mean_the_same():
    from dress.cli.options import overrides

    parser = build_parser()
    new = parser.parse_args(["prune", "--out", "o", "--reg-steps", "7", "--reg-lam", "2", "--reg-batch-size", "3"])
    old = parser.parse_args(["prune", "--out", "o", "--steps", "7", "--lam", "2", "--batch-size", "3"])
    fields = [f for f in config_fields() if f.flag]
    assert overrides(new, fields) == overrides(old, fields) == {"regularize": {"steps": 7, "lam": 2.0, "batch_size": 3}}
    assert {f.flag for f in config_fields() if f.dotted.startswith("regularize.")} <= \
        {f"--reg-{f.dotted.split('.')[1].replace('_', '-')}" for f in config_fields() if f.dotted.startswith("regularize.")}


def test_every_training_stage_has_the_same_options():
    by_block: dict[str, set[str]] = {}
    for f in config_fields():
        block, _, name = f.dotted.rpartition(".")
        by_block.setdefault(block, set()).add(name)
    common = {"lr", "warmup_steps", "batch_size", "grad_accum", "weight_decay", "max_grad_norm",
              "gradient_checkpointing", "checkpoint_every"}
    for block in ("regularize", "recovery", "trsp"):
        assert common <= by_block[block], block


def test_given_options_override_and_absent_ones_do_not():
    parser = argparse.ArgumentParser()
    fields = add_config_options(parser, skip=("model",))
    args = parser.parse_args(["--rft-steps", "7", "--no-eval", "--eval-tokens", "all", "--lora-targets", "q_proj,v_proj"])
    tree = overrides(args, fields)
    assert tree == {"recovery": {"steps": 7, "targets": ["q_proj", "v_proj"]},
                    "evaluate": {"enabled": False, "max_tokens": None}}
    config = validate_config(tree)
    assert config.recovery.steps == 7 and config.evaluate.max_tokens is None and config.regularize.lam == 1.5


def test_methods_come_from_the_registry():
    names = list(methods())
    assert names[0] == "dress" and {"direct", "fpr", "slicegpt", "sleb", "shortgpt", "trsp"} <= set(names)
    assert PruneConfig(method="trsp").method == "trsp"
    with pytest.raises(DressError, match="--method"):
        validate_config({"method": "magic"})
    assert aliases()["dress-l1"] == ("dress", {"regularize.norm": "l1"})
    assert get("direct").needs_data(PruneConfig(method="direct", selection="last")) is False
    assert callable(get("dress").function())


def test_flag_of_maps_fields_to_the_flags_users_type():
    assert flag_of("recovery.steps") == "--rft-steps"
    assert flag_of("evaluate.seq_len") == "--eval-seq-len"
    assert flag_of("data.seed") == "--data-seed"
    assert flag_of("depth.batch_size") == "--score-batch-size"
    assert flag_of("model") is None


def test_quiet_keeps_only_the_result(tmp_path, capsys):
    from tiny_models import save_tiny

    model_dir = save_tiny(tmp_path / "tiny", "llama")
    assert main(["prune", str(model_dir), "--out", str(tmp_path / "o"), "--method", "direct", "--selection", "last",
                 "--no-rft", "--no-eval", "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "[dress]" not in captured.err and "hidden width" in captured.out


def test_log_lines_go_to_stderr_not_stdout(tmp_path, capsys):
    from tiny_models import save_tiny

    model_dir = save_tiny(tmp_path / "tiny", "llama")
    assert main(["prune", str(model_dir), "--out", str(tmp_path / "o"), "--method", "direct", "--selection", "last",
                 "--no-rft", "--no-eval", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "[dress] remove channels" in captured.err and "[dress]" not in captured.out


def test_no_progress_turns_off_bars_but_keeps_messages(monkeypatch):
    import io
    import logging

    from dress.logs import log, progress, setup_logging

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    try:
        setup_logging()
        assert not progress(range(2), file=terminal).disable
        setup_logging(progress_bars=False)
        assert progress(range(2), file=terminal).disable
        assert log.level == logging.INFO
    finally:
        setup_logging()


@pytest.mark.parametrize("command", ["prune", "eval", "bench", "compare", "export", "plan"])
def test_every_command_takes_no_progress(command):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    assert any("--no-progress" in action.option_strings for action in sub._actions)
