"""The DReSS penalty and its proximal step, on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dress.methods.dress.config import RegularizeConfig
from dress.methods.dress.stage import regularize
from dress.methods.dress.penalty import channel_groups, group_scales, offsets_for, penalty, proximal_step, slice_mass
from tiny_models import MODEL_TYPES, sample_ids, tiny_model

CHANNELS = [3, 10, 40]


def test_penalty_matches_hand_computation_on_a_toy():
    model = tiny_model("llama")
    slices = channel_groups(model, [2])
    expected_l2 = 0.0
    expected_l1 = 0.0
    for s in slices:
        t = s.param.detach()
        group = t[:, 2] if s.dim == 1 else t[2].reshape(-1)
        expected_l2 += math.sqrt(group.numel()) * group.norm().item()
        expected_l1 += group.abs().sum().item()
    assert penalty(slices, "l2").item() == pytest.approx(expected_l2, rel=1e-5)
    assert penalty(slices, "l1").item() == pytest.approx(expected_l1, rel=1e-5)


def test_scaled_penalty_matches_hand_computation_on_a_toy():
    """With s_g = the group's starting RMS: R = sum s_g sqrt(n_g) ||g||_2 (l2), sum s_g ||g||_1 (l1)."""
    model = tiny_model("llama")
    slices = channel_groups(model, [2, 7])
    scales = group_scales(slices)
    expected_l2 = expected_l1 = 0.0
    for s in slices:
        t = s.param.detach()
        for c in (2, 7):
            group = t[:, c] if s.dim == 1 else t[c].reshape(-1)
            rms = group.pow(2).mean().sqrt().item()
            expected_l2 += rms * math.sqrt(group.numel()) * group.norm().item()
            expected_l1 += rms * group.abs().sum().item()
    assert penalty(slices, "l2", scales=scales).item() == pytest.approx(expected_l2, rel=1e-5)
    assert penalty(slices, "l1", scales=scales).item() == pytest.approx(expected_l1, rel=1e-5)


def test_scaled_l2_groups_shrink_at_the_same_pace_and_reach_zero_together():
    """Each l2 step removes the same fraction of every group's starting RMS (a norm gain of 3 and a
    weight column of 0.02 alike), so after 1/shrink steps every group is exactly zero."""
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.norm.weight.fill_(3.0)  # a norm gain far larger than any weight column
    slices = channel_groups(model, CHANNELS)
    scales = group_scales(slices)
    proximal_step(slices, "l2", shrink=0.25, scales=scales)
    after = group_scales(slices)
    for name in scales:
        assert torch.allclose(after[name], 0.75 * scales[name], rtol=1e-4, atol=1e-7), name
    for _ in range(3):
        proximal_step(slices, "l2", shrink=0.26, scales=scales)  # 0.25 + 3 x 0.26 > 1: past zero
    assert sum(slice_mass(slices).values()) == 0.0


def test_scaled_l1_step_soft_thresholds_each_entry_by_its_group_scale():
    model = tiny_model("llama")
    slices = channel_groups(model, CHANNELS)
    scales = group_scales(slices)
    before = [s.view().clone() for s in slices]
    proximal_step(slices, "l1", shrink=0.5, scales=scales)
    for s, old in zip(slices, before):
        threshold = 0.5 * scales[s.name].unsqueeze(1)
        expected = old.sign() * (old.abs() - threshold).clamp_min(0.0)
        assert torch.allclose(s.view(), expected, atol=1e-7), s.name


def test_groups_cover_every_reader_writer_embedding_and_norm_once():
    model = tiny_model("llama")  # tied: lm_head shares the embedding
    names = [s.name for s in channel_groups(model, CHANNELS)]
    assert len(names) == len(set(names))
    # 3 layers x (5 readers + 2 writers + 2 norms) + embedding + final norm; lm_head is tied
    assert len(names) == 3 * 9 + 2
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_proximal_step_touches_only_the_intended_groups(model_type):
    model = tiny_model(model_type)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    slices = channel_groups(model, CHANNELS)
    proximal_step(slices, "l2", shrink=1e-3, offsets=offsets_for(model, slices))
    after = model.state_dict()
    changed_somewhere = False
    for key, old in before.items():
        new = after[key]
        diff = (new - old).abs()
        if diff.max() == 0:
            continue
        changed_somewhere = True
        # every changed entry lies on a regularized channel along the tensor's hidden axis
        mask = torch.zeros_like(diff, dtype=torch.bool)
        for dim in range(new.dim()):
            if new.shape[dim] == 48:
                idx = [slice(None)] * new.dim()
                idx[dim] = CHANNELS
                mask[tuple(idx)] = True
        assert not (diff > 0)[~mask].any(), key
    assert changed_somewhere


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_proximal_steps_reach_exact_zero(norm):
    model = tiny_model("qwen3")
    slices = channel_groups(model, CHANNELS)
    start = sum(slice_mass(slices).values())
    for _ in range(3):
        proximal_step(slices, norm, shrink=0.5)
    assert sum(slice_mass(slices).values()) == 0.0 < start


def test_gemma_norms_shrink_towards_gain_zero():
    model = tiny_model("gemma3_text")
    slices = channel_groups(model, CHANNELS)
    offsets = offsets_for(model, slices)
    proximal_step(slices, "l2", shrink=10.0, offsets=offsets)
    assert torch.allclose(model.model.norm.weight[CHANNELS], torch.full((3,), -1.0))


def _reg_config(**kw) -> RegularizeConfig:
    return RegularizeConfig(**{"steps": 6, "lr": 1e-3, "warmup_steps": 0, "lam": 2.0, **kw})


def test_dress_shrinks_removed_groups_and_fpr_shrinks_all():
    data = sample_ids(8, 16, seed=3)
    model = tiny_model("llama")
    report = regularize(model, CHANNELS, data, _reg_config())
    assert report.preserved_ratio == 0.0  # lam=2: the penalty alone zeroes every group by mid-run
    assert report.reg_loss[0] == pytest.approx(2.0, rel=1e-3)  # lam * R / R_0 starts at lam
    kept = [c for c in range(48) if c not in CHANNELS]
    kept_mass = sum(slice_mass(channel_groups(model, kept)).values())

    fpr = tiny_model("llama")
    fpr_report = regularize(fpr, CHANNELS, data, _reg_config(), regularized=list(range(48)))
    fpr_kept_mass = sum(slice_mass(channel_groups(fpr, kept)).values())
    assert fpr_kept_mass < 0.95 * kept_mass  # FPR also shrinks the channels it keeps
    # ... with the same total penalty spread over 48 channels instead of 3
    assert fpr_report.reg_loss[0] == pytest.approx(2.0 * 3 / 48, rel=1e-3)
    assert 0.5 < fpr_report.preserved_ratio < 1.0


def test_without_penalty_groups_barely_move():
    model = tiny_model("llama")
    report = regularize(model, CHANNELS, sample_ids(8, 16, seed=3), _reg_config(lam=0.0))
    assert report.preserved_ratio > 0.8


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    import dress.training.loop as training

    data = sample_ids(8, 16, seed=3)
    full = tiny_model("llama")
    regularize(full, CHANNELS, data, _reg_config(checkpoint_every=3))

    # Interrupt the second run right after its first checkpoint (step 3 of 6).
    real_save = training._checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        regularize(tiny_model("llama"), CHANNELS, data, _reg_config(checkpoint_every=3), checkpoint_dir=tmp_path / "ck")
    monkeypatch.setattr(training, "_checkpoint", real_save)
    assert json.loads((tmp_path / "ck" / "state.json").read_text())["step"] == 3

    resumed = tiny_model("llama")  # a fresh process starts from the dense model again
    regularize(resumed, CHANNELS, data, _reg_config(checkpoint_every=3), checkpoint_dir=tmp_path / "ck", resume=True)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k  # bit for bit: the optimizer state and RNG come back exactly


def test_scaled_l1_reaches_exact_zero_once_the_accumulated_shrink_passes_one():
    """With s_g = max|w| of the group, lam = 1 (total shrink 1) zeroes every entry of every group."""
    model = tiny_model("llama")
    slices = channel_groups(model, CHANNELS)
    scales = group_scales(slices, norm="l1")
    for _ in range(4):
        proximal_step(slices, "l1", shrink=0.26, scales=scales)
    assert sum(slice_mass(slices).values()) == 0.0


def test_shrink_until_zeroes_the_groups_by_that_point_and_holds_them():
    """lam = 1 with shrink_until = 0.5 reaches exact zero at half the steps (not only at the end)
    and keeps the groups at zero for the rest of the stage."""
    data = sample_ids(8, 16, seed=3)
    half = regularize(tiny_model("llama"), CHANNELS, data, _reg_config(steps=8, lam=1.0, shrink_until=0.5))
    assert half.preserved_ratio == 0.0
    # logged after Adam's step and before the shrink: from step 4 on only Adam's one-step push-back
    assert max(half.reg_loss[4:]) < 0.02 * half.reg_loss[0]
    whole = regularize(tiny_model("llama"), CHANNELS, data, _reg_config(steps=8, lam=1.0))
    assert whole.reg_loss[4] > 0.2 * whole.reg_loss[0]  # without it the same lam is still shrinking at step 4


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_penalty_mode_is_the_papers_loss_term_and_leaves_mass_for_the_cut(norm):
    """mode=penalty adds penalty_lam * (plain sum of group norms) to the loss: the groups shrink
    more with a larger lambda, but Adam does not drive them to exact zero."""
    data = sample_ids(8, 16, seed=3)
    model = tiny_model("llama")
    with torch.no_grad():
        before = float(penalty(channel_groups(model, CHANNELS), norm, size_weighted=False))
    weak = regularize(model, CHANNELS, data, _reg_config(mode="penalty", penalty_lam=1e-4, norm=norm))
    assert weak.reg_loss[0] == pytest.approx(1e-4 * before, rel=1e-4)
    strong = regularize(tiny_model("llama"), CHANNELS, data, _reg_config(mode="penalty", penalty_lam=1.0, norm=norm))
    free = regularize(tiny_model("llama"), CHANNELS, data, _reg_config(lam=0.0))
    assert 0.0 < strong.preserved_ratio < free.preserved_ratio - 0.01
    assert strong.reg_loss[-1] < strong.reg_loss[0]


def test_paper_penalty_drops_the_group_size_weights():
    model = tiny_model("llama")
    slices = channel_groups(model, CHANNELS)
    with torch.no_grad():
        plain = sum(float(s.view().norm(dim=1).sum()) for s in slices)
        assert float(penalty(slices, "l2", size_weighted=False)) == pytest.approx(plain, rel=1e-5)
