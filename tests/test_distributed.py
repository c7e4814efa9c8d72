"""Several processes (torchrun, gloo, CPU) give what one process gives. Plain data parallel (2
processes): regularization weights, resume across process counts, the FSDP2 proximal step on raw
shards, ``dress prune`` end to end with only the main process writing. FSDP2 through accelerate
(tests/cpu_fsdp.py; 2 processes, then 1 resuming): the same weights, a sharded checkpoint resumed on
another number of processes, ``dress prune`` end to end. The launches start when the module's first
test asks for them and run while the one-process references run in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cpu_fsdp
import distributed_worker as worker
from dress.training.distributed import Runtime, current_runtime, engine_kind, launched, rank_micro_batches
from dress.errors import DressError
from tiny_models import save_tiny, write_corpus

TOLERANCE = 1e-5
LAUNCH_ENV_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP",
                   "ACCELERATE_USE_DEEPSPEED")


class Launch:
    """``torchrun --standalone --nproc_per_node N tests/distributed_worker.py OUT MODE``, waited on demand."""

    def __init__(self, out: Path, mode: str, processes: int = 2, env: dict[str, str] | None = None):
        self.out = out
        clean = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS}
        clean.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   str(Path(worker.__file__)), str(out), mode]
        self.process = subprocess.Popen(command, env=clean, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: str | None = None

    def wait(self) -> Path:
        if self.output is None:
            self.output, _ = self.process.communicate(timeout=300)
        assert self.process.returncode == 0, self.output[-4000:]
        return self.out

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _launch_folder(tmp_path_factory, name: str) -> Path:
    out = tmp_path_factory.mktemp(name)
    save_tiny(out / "tiny", "llama")
    write_corpus(out / "corpus.txt")
    return out


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    launch = Launch(_launch_folder(tmp_path_factory, "two_processes"), "ddp")
    yield launch
    launch.kill()


class ShardedLaunches:
    """Two FSDP2 processes (regularization, an interrupted run, ``dress prune``), then one FSDP2
    process resuming the two-process checkpoint: accelerate's sharded path end to end on CPU."""

    def __init__(self, out: Path):
        self.env = cpu_fsdp.fsdp_environment()
        self.two = Launch(out, "fsdp", 2, self.env)
        self.one: Launch | None = None

    def wait(self) -> Path:
        out = self.two.wait()
        if self.one is None:
            self.one = Launch(out, "fsdp-resume", 1, self.env)
        return self.one.wait()

    def kill(self) -> None:
        for launch in (self.two, self.one):
            if launch is not None:
                launch.kill()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    launches = ShardedLaunches(_launch_folder(tmp_path_factory, "fsdp_processes"))
    yield launches
    launches.kill()


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.processes
@pytest.mark.parametrize("scenario", sorted(worker.SCENARIOS))
@pytest.mark.parametrize("launch,prefix", [("two", ""), ("sharded", "fsdp_")], ids=["ddp", "fsdp2"])
def test_two_processes_regularize_to_the_same_weights_as_one(request, launch, prefix, scenario):
    one = worker.run_regularize(**worker.SCENARIOS[scenario]).state_dict()
    out = request.getfixturevalue(launch).wait()
    assert _max_diff(one, torch.load(out / f"{prefix}{scenario}.pt", weights_only=True)) < TOLERANCE


@pytest.mark.processes
def test_a_two_process_checkpoint_resumes_in_one_process(two):
    uninterrupted = worker.run_regularize(**worker.SCENARIOS["accum"]).state_dict()
    checkpoint = two.wait() / "resume"
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 3
    resumed = worker.run_regularize(checkpoint_dir=checkpoint, resume=True, checkpoint_every=3,
                                    **worker.SCENARIOS["accum"])
    assert _max_diff(uninterrupted, resumed.state_dict()) < TOLERANCE


@pytest.mark.processes
def test_proximal_step_on_fsdp2_shards_equals_the_single_process_step(two):
    out = two.wait()
    for rank in (0, 1):
        assert json.loads((out / f"fsdp2_rank{rank}.json").read_text())["max_diff"] < TOLERANCE


@pytest.mark.processes
def test_dress_prune_under_torchrun_matches_one_process_and_only_main_writes(two, tmp_path):
    from dress.cli import main

    alone = tmp_path / "alone"
    assert main(worker.cli_args(two.out / "tiny", two.out / "corpus.txt", alone)) == 0
    out = two.wait()
    assert [(out / f"cli_rank{r}.txt").read_text() for r in (0, 1)] == ["0", "0"]
    pruned = out / "pruned"
    assert _max_diff(load_file(alone / "model.safetensors"), load_file(pruned / "model.safetensors")) < TOLERANCE
    record, reference = json.loads((pruned / "dress.json").read_text()), json.loads((alone / "dress.json").read_text())
    assert record["launch"] == {"engine": "ddp", "processes": 2}
    assert record["hidden_channels_removed"] == reference["hidden_channels_removed"]
    assert record["evaluation"]["held_out"]["pruned"]["ppl"] == pytest.approx(
        reference["evaluation"]["held_out"]["pruned"]["ppl"], rel=1e-4)
    assert not (out / "pruned.checkpoints").exists() and not list(out.glob(".pruned.partial-*"))
    assert two.output.count(f"-> {pruned}  (method") == 1  # one summary, from the main process


@pytest.mark.processes
def test_a_sharded_two_process_checkpoint_resumes_in_one_fsdp2_process(sharded):
    uninterrupted = worker.run_regularize(**worker.SCENARIOS["accum"]).state_dict()
    out = sharded.wait()
    assert (out / "fsdp_interrupted_at.txt").read_text() == "3"
    assert (out / "fsdp_resumed_at.txt").read_text() == "3"
    assert not list((out / "fsdp_resume").glob("*.pt"))  # one format, no pickles, for every engine
    resumed = torch.load(out / "fsdp_resumed.pt", weights_only=True)
    assert _max_diff(uninterrupted, resumed) < TOLERANCE


@pytest.mark.processes
def test_readme_torchrun_command_with_default_batches_adapts_the_batch(two):
    """`torchrun --nproc_per_node 2 -m dress prune MODEL --out OUT`: the default global batch (1)
    becomes 2 (grad_accum 1 -> 2, said in the log and the record) instead of stopping."""
    out = two.wait()
    assert [(out / f"readme_cli_rank{r}.txt").read_text() for r in (0, 1)] == ["0", "0"]
    record = json.loads((out / "readme_pruned" / "dress.json").read_text())
    assert any("global batch 1 -> 2" in note for note in record["batch_adapted"])
    assert record["launch"] == {"engine": "ddp", "processes": 2}


@pytest.mark.processes
def test_dress_prune_under_fsdp2_matches_one_process(sharded, tmp_path):
    from dress.cli import main

    alone = tmp_path / "alone"
    assert main(worker.cli_args(sharded.two.out / "tiny", sharded.two.out / "corpus.txt", alone)) == 0
    out = sharded.wait()
    assert [(out / f"fsdp_cli_rank{r}.txt").read_text() for r in (0, 1)] == ["0", "0"]
    pruned = out / "fsdp_pruned"
    assert _max_diff(load_file(alone / "model.safetensors"), load_file(pruned / "model.safetensors")) < TOLERANCE
    record = json.loads((pruned / "dress.json").read_text())
    assert record["launch"] == {"engine": "fsdp", "processes": 2}


# -- in-process contracts (no launch) -----------------------------------------------------------


@pytest.mark.parametrize("batch_size,grad_accum,world", [(1, 4, 2), (4, 1, 2), (2, 3, 3), (4, 2, 8), (3, 4, 4)])
def test_rank_shares_are_disjoint_equal_and_cover_the_global_batch(batch_size, grad_accum, world):
    step = torch.arange(100, 100 + batch_size * grad_accum)
    shares = [rank_micro_batches(step, batch_size, rank, world) for rank in range(world)]
    sizes = {len(micro) for share in shares for micro in share}
    assert len(sizes) == 1 and sizes.pop() <= batch_size
    assert len({len(share) for share in shares}) == 1
    assert torch.equal(torch.cat([torch.cat(share) for share in shares]), step)


def test_a_global_batch_that_does_not_split_is_refused():
    with pytest.raises(DressError, match="divisible by the number of processes"):
        rank_micro_batches(torch.arange(3), 1, 0, 2)


def test_plain_process_is_local_and_joins_nothing(monkeypatch):
    for key in LAUNCH_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert not launched() and engine_kind() == "local"
    assert current_runtime() == Runtime() and Runtime().is_main and not Runtime().distributed
    assert not torch.distributed.is_initialized()


def test_launch_kind_comes_from_the_launcher_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert engine_kind() == "ddp"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert engine_kind() == "fsdp"


def test_a_deepspeed_launch_config_is_a_clear_error(monkeypatch):
    """DeepSpeed was removed (it never ran); an accelerate config that still asks for it is refused,
    with or without a multi-process launcher, naming the FSDP2 configs to use instead."""
    for world in ("4", "1"):
        monkeypatch.setenv("WORLD_SIZE", world)
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
        with pytest.raises(DressError, match="FSDP2 config.*1gpu-fsdp-offload.yaml"):
            current_runtime("cpu")


def test_fsdp_on_cpu_and_fsdp1_are_clear_errors(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(DressError, match="needs CUDA GPUs"):
        current_runtime("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(DressError, match="fsdp_version: 2"):
        current_runtime()
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    with pytest.raises(DressError, match="cpu_ram_efficient_loading"):
        current_runtime()


def test_the_paper_protocol_config_is_a_valid_prune_config():
    import dress
    from dress.config import PruneConfig

    config = PruneConfig.model_validate(json.loads(
        (Path(dress.__file__).parent / "configs" / "llama2-7b-paper.json").read_text()))
    assert (config.data.samples, config.data.seq_len, config.data.split) == (1000, 2048, "3:1")
    assert config.data.calib == config.evaluate.source == "wikitext2" and config.ratio == 0.25
    assert config.regularize.batch_size * config.regularize.grad_accum % 8 == 0  # splits over 8 GPUs


def test_the_memory_table_in_the_docs_is_the_computed_one():
    from dress.memory_plan import markdown_table

    assert markdown_table() in (Path(__file__).parents[1] / "docs" / "scale.md").read_text()


@pytest.mark.parametrize("name,engine", [
    ("1gpu.yaml", "local"), ("1gpu-fsdp-offload.yaml", "fsdp"), ("8gpu-ddp.yaml", "ddp"),
    ("8gpu-fsdp.yaml", "fsdp"),
])
def test_shipped_launch_configs_select_the_intended_engine(monkeypatch, name, engine):
    env = cpu_fsdp.launch_environment(cpu_fsdp.SHIPPED_CONFIGS / name)
    for key in LAUNCH_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key in LAUNCH_ENV_KEYS:
            monkeypatch.setenv(key, value)
    assert engine_kind() == engine
    assert env.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "false") == "false"  # refused by current_runtime
    assert name in (Path(__file__).parents[1] / "docs" / "scale.md").read_text()
