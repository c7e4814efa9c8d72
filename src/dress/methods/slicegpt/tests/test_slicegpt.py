"""SliceGPT invariants, per supported family: norm fusion and rotation keep logits; slicing
directions without energy is lossless; saved models reload with ``dress.load``."""

from __future__ import annotations

import pytest
import torch

from dress.adapters import adapter_for, parameter_count
from dress.io.saving import load_checkpoint, save_model
from dress.errors import DressError
from dress.methods.slicegpt.method import check_supported, slice_model
from dress.methods.slicegpt.rotate import StreamNorm, fold_norms
from tiny_models import sample_ids, tiny_model

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "opt", "phi")
D, KEPT = 48, 36  # tiny width; 36 = 9 x 4 heads
CALIBRATION = sample_ids(batch=8, seq=32, seed=3)  # 256 tokens: spans every direction the stream uses


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@torch.no_grad()
def confine_stream(model, n_empty: int, seed: int = 5) -> None:
    """Make every writer to the residual stream (embeddings, writer rows and biases) write into a
    random subspace of dimension ``d - n_empty``: the stream then has no energy in ``n_empty``
    directions (also after LayerNorm centring, which maps the subspace into another one)."""
    adapter = adapter_for(model)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    proj = (q[:, : D - n_empty] @ q[:, : D - n_empty].T).float()  # [d, d] projector
    for _, embedding in adapter.named_embeddings(model):
        embedding.weight.copy_(embedding.weight @ proj)
    for _, writer in adapter.named_writers(model):
        writer.weight.copy_(proj @ writer.weight)
        if writer.bias is not None:
            writer.bias.copy_(writer.bias @ proj)


@pytest.mark.parametrize("model_type", FAMILIES)
class TestSliceGPT:
    def test_norm_fusion_keeps_logits(self, model_type):
        model = tiny_model(model_type)
        ids = sample_ids()
        before = logits(model, ids)
        fold_norms(model, adapter_for(model))
        assert all(
            isinstance(model.get_submodule(name), StreamNorm) for name, _ in adapter_for(model).named_norms(model)
        )
        assert (logits(model, ids) - before).abs().max().item() < 1e-4

    def test_rotation_without_slicing_keeps_logits(self, model_type):
        model = tiny_model(model_type)
        ids = sample_ids()
        before = logits(model, ids)
        result = slice_model(model, CALIBRATION, D, batch_size=3)
        assert (logits(model, ids) - before).abs().max().item() < 1e-4
        assert min(result.energy) > 0.999999

    def test_slicing_empty_directions_is_lossless(self, model_type):
        model = tiny_model(model_type)
        confine_stream(model, D - KEPT)
        ids = sample_ids()
        before = logits(model, ids)
        result = slice_model(model, CALIBRATION, KEPT, batch_size=3)
        assert (logits(model, ids) - before).abs().max().item() < 1e-4
        assert result.record["hidden_size"] == {"before": D, "after": KEPT}
        for _, reader in adapter_for(model).named_readers(model):
            assert reader.weight.shape[1] == KEPT

    def test_slicing_real_directions_changes_logits(self, model_type):
        # Guards the test above: slicing directions that carry energy must be visible.
        model = tiny_model(model_type)
        ids = sample_ids()
        before = logits(model, ids)
        result = slice_model(model, CALIBRATION, KEPT, batch_size=3)
        assert (logits(model, ids) - before).abs().max().item() > 1e-3
        assert max(result.energy[1:]) < 1.0

    def test_shortcuts_are_counted(self, model_type):
        model = tiny_model(model_type)
        adapter = adapter_for(model)
        tied = adapter.is_tied(model)
        slice_model(model, CALIBRATION, KEPT, batch_size=3)
        shortcuts = [m for m in model.modules() if isinstance(m, StreamNorm) and m.shortcut is not None]
        per_layer = 1 if adapter.parallel_block else 2
        assert len(shortcuts) == per_layer * model.config.num_hidden_layers
        total = parameter_count(model)
        assert total == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        extra = sum(m.shortcut.weight.numel() for m in shortcuts)
        assert extra == len(shortcuts) * KEPT * KEPT
        if tied and adapter.norm_kind == "rms":
            assert adapter.is_tied(model)  # kept tied, through the final norm's head map

    def test_save_and_load_keep_logits(self, model_type, tmp_path):
        model = tiny_model(model_type)
        result = slice_model(model, CALIBRATION, KEPT, batch_size=3)
        ids = sample_ids()
        expected = logits(model, ids)
        save_model(model, None, tmp_path / "out", {"method": "slicegpt", **result.record})
        loaded = load_checkpoint(tmp_path / "out")
        assert parameter_count(loaded) == parameter_count(model)
        assert (logits(loaded, ids) - expected).abs().max().item() < 1e-5


def test_the_record_names_its_rebuild_by_registry_key_and_old_records_still_load(tmp_path):
    import json

    model = tiny_model("llama")
    result = slice_model(model, CALIBRATION, KEPT, batch_size=3)
    assert result.record["rebuild"]["method"] == "slicegpt" and "function" not in result.record["rebuild"]
    ids = sample_ids()
    expected = logits(model, ids)
    out = save_model(model, None, tmp_path / "out", {"method": "slicegpt", **result.record})
    record = json.loads((out / "dress.json").read_text())
    for old_path in ("dress.methods.slicegpt:rebuild", "dress.methods.slicegpt.method:rebuild"):  # earlier formats
        record["rebuild"] = {"function": old_path, "args": record["rebuild"]["args"]}
        (out / "dress.json").write_text(json.dumps(record))
        assert (logits(load_checkpoint(out), ids) - expected).abs().max().item() < 1e-5
    record["rebuild"] = {"method": "no-such-method", "args": {}}
    (out / "dress.json").write_text(json.dumps(record))
    with pytest.raises(DressError, match="no-such-method"):
        load_checkpoint(out)


def test_gemma3_is_refused_with_a_reason():
    model = tiny_model("gemma3_text")
    with pytest.raises(DressError, match="post-attention"):
        check_supported(model)


def test_lora_recovery_keeps_shortcuts_working():
    """peft wraps the writers that carry the shortcut hook; after merging, the zero-initialised
    LoRA (0 steps) must leave logits unchanged."""
    from dress.training.config import RecoveryConfig
    from dress.training.recovery import recover

    model = tiny_model("llama")
    slice_model(model, CALIBRATION, KEPT, batch_size=3)
    ids = sample_ids()
    before = logits(model, ids)
    merged, _ = recover(model, CALIBRATION[:2], RecoveryConfig(steps=0))
    assert (logits(merged, ids) - before).abs().max().item() < 1e-5


def test_prune_command_slicegpt_end_to_end(tmp_path):
    """`dress prune --method slicegpt` with LoRA recovery writes a model that `dress.load` rebuilds."""
    import json

    import dress
    from dress.cli import main
    from tiny_models import save_tiny, write_corpus

    model_dir = save_tiny(tmp_path / "tiny", "llama")
    corpus = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "out"
    args = ["prune", str(model_dir), "--out", str(out), "--method", "slicegpt", "--calib", str(corpus),
            "--eval-source", str(corpus), "--samples", "8", "--seq-len", "32", "--rft-steps", "2",
            "--eval-seq-len", "32", "--eval-tokens", "256", "--device", "cpu"]
    assert main(args) == 0
    record = json.loads((out / "dress.json").read_text())
    assert record["loader"] == "dress" and record["hidden_size"] == {"before": 48, "after": 36}
    assert len(record["report"]["slicegpt"]["energy_kept"]) == 2 * 3 + 1
    loaded = dress.load(out)
    assert parameter_count(loaded) == record["parameters"]["after"]
    assert torch.isfinite(logits(loaded, sample_ids())).all()
