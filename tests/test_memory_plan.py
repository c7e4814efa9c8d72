"""The memory plan (dress.memory_plan), `dress plan`, the pre-load check of `dress prune`, presets,
the global batch for N processes, bf16 on CPU, --save-dtype, and out-of-memory as an answer."""

from __future__ import annotations

import json

import pytest
import torch

from dress import memory_plan as mp
from dress.cli import main
from dress.config import PruneConfig
from dress.errors import DressError
from tiny_models import FAST_FLAGS, save_tiny, tiny_config, tiny_model, write_corpus

FAST = FAST_FLAGS

# Hand-computed for tests/tiny_models.py's llama (V=258, h=48, i=96, 4 heads x 16, 2 KV heads, 3 layers, tied):
#   embedding 258*48 = 12384; per layer q 48*64 + k 48*32 + v 48*32 + o 64*48 + 3 * 48*96 + 2 norms * 48 = 23136;
#   final norm 48  ->  P = 12384 + 3*23136 + 48 = 81840
P_TINY = 81840


@pytest.fixture(scope="module")
def shape():
    return mp.shape_from_config(tiny_config("llama"), "tiny")


def test_shape_counts_parameters_on_the_meta_device(shape):
    assert shape.params == P_TINY == sum(p.numel() for p in tiny_model("llama").parameters())
    assert (shape.embed_params, shape.hidden, shape.layers, shape.vocab) == (12384, 48, 3, 258)
    assert (shape.attn_width, shape.kv_width, shape.intermediate, shape.tied) == (64, 32, 96, True)


def test_activation_and_logit_terms_match_hand_computation(shape):
    # per layer and token: norms 2*2*48 = 192 elements (4 bytes), others 5*64 + 2*32 + 4*96 = 768
    assert mp.activation_bytes(shape, 1, 8, bf16=False, checkpointing=False) == 3 * 8 * (4 * 192 + 4 * 768)  # 92160
    assert mp.activation_bytes(shape, 1, 8, bf16=True, checkpointing=False) == 3 * 8 * (4 * 192 + 2 * 768)  # 55296
    # checkpointing: each layer's fp32 input (3 * 8 * 48 * 4) + one layer recomputed
    assert mp.activation_bytes(shape, 1, 8, bf16=False, checkpointing=True) == 3 * 8 * 48 * 4 + 8 * 3840
    n = 8 * 258
    assert mp.training_logits_bytes(shape, 1, 8, bf16=False) == 16 * n
    assert mp.training_logits_bytes(shape, 1, 8, bf16=True) == 18 * n


def test_lora_stage_terms(shape):
    """Frozen fp32 weights + adapters; under bf16 autocast a bf16 copy of every weight saved for
    backward; on CPU glibc's heap keeps one more set of activations; on CUDA it does not count."""
    def lora(**kw):
        run = mp.RunSettings(method="direct", trains=False, ratio=0.0, rft_batch=1, train_seq=8, **kw)
        return {s.stage: s for s in mp.plan_stages(shape, run)}["recover (lora)"]

    lp = mp.lora_params(shape, 8)
    fp32, bf16 = lora(device_type="cpu"), lora(device_type="cpu", bf16=True)
    assert fp32.parts["weights"] == 4 * P_TINY + 4 * lp and fp32.parts["optimizer"] == 8 * lp
    assert bf16.parts["weights"] - fp32.parts["weights"] == 2 * P_TINY
    assert fp32.parts["allocator retention"] == fp32.parts["activations"]
    assert "allocator retention" not in lora(device_type="cuda").parts


def test_regularization_stage_per_engine(shape):
    run = mp.RunSettings(train_batch=1, train_seq=8, device_type="cpu")
    act, logits = 92160, 16 * 8 * 258
    table = 4 * 258 * 48  # the embedding: AdamW's one-tensor temporary on CPU, and the tied second gradient
    single = {s.stage: s for s in mp.plan_stages(shape, run, "single")}["regularize"]
    assert single.parts["weights"] == 4 * P_TINY and single.parts["gradients"] == 4 * P_TINY + table
    assert single.parts["optimizer"] == 8 * P_TINY + table
    process = mp.CPU_OVERHEAD + mp.TOKENIZER_BYTES_PER_TOKEN * 258
    assert single.parts["allocator retention"] == act  # glibc's heap keeps one more set of activations on CPU
    assert single.device == 16 * P_TINY + 2 * table + 2 * act + logits + process
    ddp = {s.stage: s for s in mp.plan_stages(shape, run, "ddp", 2)}["regularize"]
    assert ddp.device - single.device == 4 * P_TINY  # DDP's gradient buckets
    cuda = mp.RunSettings(train_batch=1, train_seq=8, device_type="cuda", bf16=True)
    fsdp = {s.stage: s for s in mp.plan_stages(shape, cuda, "fsdp2", 4)}["regularize"]
    layer = (P_TINY - 12384 - 48) / 3  # one decoder layer: the final norm (48) is in none
    assert fsdp.parts["weights"] == pytest.approx(P_TINY + 4 * layer + 2 * 12384 / 4)
    assert fsdp.parts["optimizer"] == pytest.approx(8 * P_TINY / 4 + P_TINY)  # + the foreach buffer on CUDA
    assert fsdp.host_parts["model replica (waiting)"] == 4 * P_TINY
    offload = {s.stage: s for s in mp.plan_stages(shape, cuda, "fsdp2-offload", 1)}["regularize"]
    assert "optimizer" not in offload.parts and offload.host_parts["training state (offloaded)"] == 16 * P_TINY


def test_bf16_autocast_caches_weight_casts_and_the_teacher_is_bf16(shape):
    run = mp.RunSettings(train_seq=8, bf16=True, distill=True)
    reg = {s.stage: s for s in mp.plan_stages(shape, run)}["regularize"]
    assert reg.parts["weights"] == 6 * P_TINY
    assert reg.parts["teacher"] == 2 * P_TINY + 8 * 258 * 2


LLAMA2_7B = mp.ModelShape("llama-2-7b", "llama", params=6_738_415_616, embed_params=2 * 32000 * 4096, hidden=4096,
                           layers=32, vocab=32000, intermediate=11008, attn_width=4096, kv_width=4096, tied=False,
                           source_dtype="float16")


def test_plan_all_picks_what_fits():
    run = mp.RunSettings(train_seq=2048, device_type="cuda", bf16=True, gradient_checkpointing=True)
    plans = mp.plan_all(LLAMA2_7B, run, 1, 80 * mp.GiB, 512 * mp.GiB)
    verdict = {p.strategy: p.fits for p in plans}
    assert verdict == {"single": False, "fsdp2-offload": True}  # 16P = 100 GiB > 80
    eight = {p.strategy: p.fits for p in mp.plan_all(LLAMA2_7B, run, 8, 80 * mp.GiB, 512 * mp.GiB)}
    assert eight == {"ddp": False, "fsdp2": True, "fsdp2-offload": True}
    text = mp.format_plan(LLAMA2_7B, run, plans, 1, 80 * mp.GiB, 512 * mp.GiB, "M --out OUT")
    assert "does not fit" in text and "1gpu-fsdp-offload.yaml" in text and "regularize" in text
    small_host = {p.strategy: p.fits for p in mp.plan_all(LLAMA2_7B, run, 1, 80 * mp.GiB, 64 * mp.GiB)}
    assert not any(small_host.values())  # offloading 16P needs the host memory


def test_time_estimate_states_its_arithmetic(shape):
    run = mp.RunSettings(train_seq=100, bf16=True, device_type="cuda")
    seconds = mp.estimate_seconds(shape, run, "single", 1, steps=10, global_batch=2)
    assert seconds == pytest.approx(6 * P_TINY * 10 * 2 * 100 / (mp.GPU_TFLOPS["bf16"] * 1e12))


def test_dress_plan_command_reads_only_the_config(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    tiny_config("llama").save_pretrained(folder)  # no weights at all
    assert main(["plan", str(folder), "--gpus", "8", "--gpu-memory", "80", "--host-memory", "512"]) == 0
    out = capsys.readouterr().out
    assert "FSDP2" in out and "FITS" in out and "torchrun --nproc_per_node 8 -m dress prune" in out
    assert main(["plan", str(folder), "--json", "--cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["params"] == P_TINY and data["plans"][0]["strategy"] == "single"


def test_prune_refuses_before_loading_when_the_plan_does_not_fit(tmp_path, monkeypatch):
    model_dir, corpus = save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "c.txt")
    monkeypatch.setattr("dress.memory_plan.check.available_memory", lambda device_type: (1.0e5, 1.0e5))
    loaded = []
    monkeypatch.setattr("dress.pipeline.load_model", lambda *a, **k: loaded.append(1))
    cfg = PruneConfig(model=str(model_dir), data={"calib": str(corpus)}, evaluate={"source": str(corpus)})
    from dress.pipeline import run_prune

    with pytest.raises(DressError, match="nothing was loaded") as info:
        run_prune(cfg, tmp_path / "out")
    assert "--skip-memory-check" in str(info.value) and "memory plan" in str(info.value)
    assert not loaded and not (tmp_path / "out").exists()


def test_presets_keep_what_the_user_set_and_name_the_rest():
    from dress.presets import apply_preset, default_preset, differences

    cfg = apply_preset(PruneConfig.model_validate({"data": {"samples": 64}, "regularize": {"steps": 5}}), "paper")
    assert cfg.data.seq_len == 2048 and cfg.data.calib == "wikitext2" and cfg.evaluate.seq_len == 2048
    assert cfg.data.samples == 64 and cfg.regularize.steps == 5 and cfg.preset == "paper"
    assert differences(cfg) == {"data.samples": 64, "regularize.steps": 5}
    assert default_preset("meta-llama/Llama-2-7b-hf", "cuda") == "paper"
    assert default_preset("meta-llama/Llama-2-7b-hf", "cpu") == "cpu-demo"
    assert default_preset("smollm2-135m", "cuda") == "cpu-demo" and default_preset(None, "cuda") == "cpu-demo"
    assert differences(apply_preset(PruneConfig(), "cpu-demo")) == {}


def test_global_batch_adapts_to_the_number_of_processes():
    from dress.run_setup import adapt_global_batches
    from dress.training.distributed import rank_micro_batches

    cfg, notes = adapt_global_batches(PruneConfig(), 8)
    assert cfg.regularize.grad_accum == 8 and cfg.recovery.grad_accum == 8 and cfg.trsp.grad_accum == 8
    assert "global batch 1 -> 8" in notes[0]
    for rank in range(8):  # it now splits
        rank_micro_batches(torch.arange(8), cfg.regularize.batch_size, rank, 8)
    cfg, notes = adapt_global_batches(PruneConfig.model_validate({"regularize": {"batch_size": 2, "grad_accum": 3}}), 4)
    assert cfg.regularize.batch_size * cfg.regularize.grad_accum == 12  # lcm(6, 4)
    kept, notes = adapt_global_batches(PruneConfig.model_validate({"regularize": {"grad_accum": 4},
                                                                   "recovery": {"grad_accum": 4},
                                                                   "trsp": {"grad_accum": 4}}), 2)
    assert notes == [] and kept.regularize.grad_accum == 4  # a batch that divides is left alone


def test_bf16_on_cpu_still_zeroes_the_removed_groups_and_saves_as_asked(tmp_path):
    from safetensors.torch import load_file

    model_dir, corpus = save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "c.txt")
    out = tmp_path / "out"
    args = ["prune", str(model_dir), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
            *FAST, "--bf16", "--lam", "2", "--save-dtype", "bf16"]
    assert main(args) == 0
    record = json.loads((out / "dress.json").read_text())
    assert record["report"]["regularization"]["preserved_ratio"] <= 0.02
    assert abs(record["report"]["prune_gap_nats"]) <= 0.05
    assert record["config"]["bf16"] is True and record["saved_dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    size = record["size_on_disk"]
    assert size["output_bytes"] < size["input_bytes"] / 2  # bf16 and 25% narrower than the fp32 input
    assert record["preset"] == "cpu-demo" and record["differs_from_preset"]["save_dtype"] == "bf16"
    assert "regularize" in record["memory_plan"] and record["stages"]["regularize"]["peak_memory_gib"] > 0


def test_output_keeps_the_source_dtype_by_default(tmp_path):
    from safetensors.torch import load_file

    model = tiny_model("llama").to(torch.bfloat16)
    model_dir = tmp_path / "tiny16"
    model.save_pretrained(model_dir)
    from tiny_models import byte_tokenizer

    byte_tokenizer().save_pretrained(model_dir)
    corpus = write_corpus(tmp_path / "c.txt")
    out = tmp_path / "out"
    assert main(["prune", str(model_dir), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus),
                 *FAST, "--method", "direct", "--no-rft"]) == 0
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}


def test_out_of_memory_is_an_answer_and_resume_continues(tmp_path, monkeypatch, capsys):
    model_dir, corpus = save_tiny(tmp_path / "tiny", "llama"), write_corpus(tmp_path / "c.txt")
    out = tmp_path / "out"
    args = ["prune", str(model_dir), "--out", str(out), "--calib", str(corpus), "--eval-source", str(corpus), *FAST]

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("dress.pipeline.recover", oom)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "out of memory in stage recover (lora)" in err and "--resume" in err and "Traceback" not in err
    assert (tmp_path / "out.checkpoints" / "regularize" / "state.json").is_file()
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    record = json.loads((out / "dress.json").read_text())
    assert len(record["report"]["regularization"]["lm_loss"]) == 3
    assert not (tmp_path / "out.checkpoints").exists()


@pytest.mark.parametrize("bf16", [False, True])
def test_gradient_checkpointing_trains_to_the_same_weights(bf16):
    """The 7B recipe's CPU-runnable levers (gradient checkpointing, bf16 autocast) change memory, not the result."""
    from dress.training.config import TrainSettings
    from dress.training.loop import train
    from tiny_models import sample_ids

    samples = torch.cat([sample_ids(seed=s) for s in range(4)])
    weights = []
    for ckpt in (False, True):
        model = tiny_model("llama")
        train(model, samples, TrainSettings(steps=3, lr=1e-3, batch_size=2, bf16=bf16, gradient_checkpointing=ckpt))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert (weights[0] - weights[1]).abs().max() < (1e-5 if not bf16 else 1e-2)


def test_cpu_weights_leave_the_checkpoint_memory_map(tmp_path):
    """After loading on CPU every tensor owns its storage, so a tensor freed during removal frees its memory."""
    from dress.io.loading import load_model
    from dress.pipeline import _own_memory

    model = load_model(str(save_tiny(tmp_path / "tiny", "llama"))).model
    before = {id(p): p.untyped_storage().nbytes() for p in model.parameters()}
    _own_memory(model)
    for p in model.parameters():
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size()
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert len(before) == len(list(model.parameters()))


@pytest.mark.parametrize("settings", [
    {"method": "trsp", "bf16": True, "trsp": {"gradient_checkpointing": True, "steps2": 7},
     "recovery": {"mode": "full", "targets": ["q_proj", "v_proj"], "enabled": True}},
    {"method": "llm-surgeon", "llm_surgeon": {"shots": 3}, "evaluate": {"enabled": False}, "preset": "paper"},
    {"method": "dress", "regularize": {"lam": 2.0, "mode": "penalty"}, "data": {"split": "1:0"}},
])
def test_the_printed_command_repeats_the_planned_run(settings):
    """The plan's "run it" line names every setting that differs from the preset, for every method:
    parsed back by `dress prune` it gives the same config."""
    import shlex

    from dress.cli import build_parser
    from dress.cli.prune import config_from_args
    from dress.config import PruneConfig
    from dress.memory_plan import prune_args
    from dress.presets import apply_preset

    config = PruneConfig.model_validate({"model": "smollm2-135m", **settings})
    config = apply_preset(config, config.preset or "cpu-demo")
    argv = ["prune", *shlex.split(prune_args(config))]
    again = config_from_args(build_parser().parse_args(argv))
    assert apply_preset(again, again.preset or "cpu-demo").model_dump() == config.model_dump()
