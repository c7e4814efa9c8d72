"""LLM Surgeon (structured): tests that would catch a wrong surgeon (docs/llm-surgeon.md, the map's
T1-T9, T11, T12). Tiny random models and matrices, fp64, CPU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dress.adapters import adapter_for, parameter_count
from dress.training.config import RecoveryConfig
from dress.methods.llm_surgeon.compact import REBUILD, compact, dead_kv_groups, layer_roles
from dress.methods.llm_surgeon.config import LLMSurgeonConfig
from dress.methods.llm_surgeon.costs import (
    col_costs,
    damped_inverse,
    row_costs,
    row_update,
    surgery,
)
from dress.methods.llm_surgeon.curvature import decoder_linears, estimate_factors
from dress.methods.llm_surgeon.method import linear_entries, surgeon_prune, surgeon_shot, zero_entries
from dress.methods.llm_surgeon.threshold import MatrixCosts, global_threshold, removed_entries
from tiny_models import byte_tokenizer, sample_ids, tiny_model

COMPACT_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "opt", "phi")


def spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3 * n, generator=g, dtype=torch.float64)
    return x @ x.T / (3 * n) + 0.1 * torch.eye(n, dtype=torch.float64)


def rand(shape, seed) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def obs(w: torch.Tensor, f: torch.Tensor, zero: list[int]) -> tuple[torch.Tensor, float]:
    """Generic OBS on vec(w) (row-major) under curvature f: set entries ``zero`` to 0 at least cost."""
    v = w.flatten()
    f_inv = torch.linalg.inv(f)
    e = torch.tensor(zero)
    block = f_inv[e][:, e]
    coeff = torch.linalg.solve(block, v[e])
    delta = -f_inv[:, e] @ coeff
    return (v + delta).view_as(w), float(0.5 * v[e] @ coeff)


def entries(rows, cols, shape) -> list[int]:
    r_, c_ = shape
    return sorted({i * c_ + j for i in range(r_) for j in range(c_) if i in rows or j in cols})


# ---- T1: curvature ------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_hooked_factors_equal_explicit_inputs_and_output_gradients(model_type):
    model = tiny_model(model_type).double()
    adapter = adapter_for(model)
    ids = sample_ids(2, 10)
    factors = estimate_factors(model, adapter, ids, batch_size=2)

    linears = decoder_linears(model, adapter)
    inputs, outputs = {}, {}

    def grab(name):
        def hook(_module, args, output):
            inputs[name], outputs[name] = args[0], output

        return hook

    hooks = [lin.register_forward_hook(grab(n)) for n, lin in linears.items()]
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, use_cache=False).logits
    for h in hooks:
        h.remove()
    nll = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                      reduction="none").view(2, -1)
    names = list(linears)
    grads = torch.autograd.grad(nll.mean(dim=1).sum(), [outputs[n] for n in names])
    tokens = ids.numel()
    for name, grad in zip(names, grads):
        x = inputs[name].reshape(-1, inputs[name].shape[-1])
        if linears[name].bias is not None:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
            assert factors.a(name)[-1, -1] == pytest.approx(1.0)  # T11: the constant-1 column
        g = grad.reshape(-1, grad.shape[-1])
        torch.testing.assert_close(factors.a(name), x.T @ x / tokens, rtol=1e-10, atol=1e-12)
        want = g.T @ g / tokens
        torch.testing.assert_close(factors.g_of(name), want, rtol=1e-9, atol=1e-9 * float(want.abs().max()))
    assert factors.reads[names[1]] == factors.reads[names[0]]  # k reads q's input moment


def test_factors_do_not_depend_on_the_batch_size():
    model = tiny_model("llama").double()
    adapter = adapter_for(model)
    ids = sample_ids(3, 10)
    one, three = (estimate_factors(model, adapter, ids, batch_size=b) for b in (1, 3))
    for name in decoder_linears(model, adapter):
        torch.testing.assert_close(one.g_of(name), three.g_of(name))
        torch.testing.assert_close(one.a(name), three.a(name))
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


# ---- T2/T3: algebra against brute-force OBS on kron(G, A) ---------------------------------
def test_single_row_and_column_costs_and_updates_are_exact_obs():
    w, g, a = rand((4, 5), 0), spd(4, 1), spd(5, 2)
    f = torch.kron(g, a)  # row-major vec(W): F = G (x) A
    g_inv, a_inv = damped_inverse(g, 0.0), damped_inverse(a, 0.0)
    rc, cc = row_costs(w, a, g_inv.diagonal()), col_costs(w, g, a_inv.diagonal())
    for r in range(4):
        target, cost = obs(w, f, entries({r}, set(), w.shape))
        assert float(rc[r]) == pytest.approx(cost, rel=1e-9)
        torch.testing.assert_close(surgery(w, g_inv, a_inv, torch.tensor([r]), torch.tensor([], dtype=torch.long)), target)
        delta = (target - w).flatten()
        assert 0.5 * float(delta @ f @ delta) == pytest.approx(cost, rel=1e-9)
    for c in range(5):
        target, cost = obs(w, f, entries(set(), {c}, w.shape))
        assert float(cc[c]) == pytest.approx(cost, rel=1e-9)
        torch.testing.assert_close(surgery(w, g_inv, a_inv, torch.tensor([], dtype=torch.long), torch.tensor([c])), target)


def test_correlated_rows_and_columns_are_joint_obs_and_sequential_is_the_union_optimum():
    w, g, a = rand((6, 5), 3), spd(6, 4), spd(5, 5)
    f = torch.kron(g, a)
    g_inv, a_inv = damped_inverse(g, 0.0), damped_inverse(a, 0.0)
    rows, cols = torch.tensor([1, 4]), torch.tensor([0, 2])
    none = torch.tensor([], dtype=torch.long)
    torch.testing.assert_close(surgery(w, g_inv, a_inv, rows, none), obs(w, f, entries({1, 4}, set(), w.shape))[0])
    torch.testing.assert_close(surgery(w, g_inv, a_inv, none, cols), obs(w, f, entries(set(), {0, 2}, w.shape))[0])
    union = obs(w, f, entries({1, 4}, {0, 2}, w.shape))[0]
    sequential = surgery(w, g_inv, a_inv, rows, cols, update="sequential")
    torch.testing.assert_close(sequential, union)
    # the official default (sum from the pre-shot W) differs from it by exactly the cross term
    summed = surgery(w, g_inv, a_inv, rows, cols, update="sum")
    cross = (g_inv[:, rows] @ torch.linalg.inv(g_inv[rows][:, rows]) @ w[rows][:, cols]
             @ torch.linalg.inv(a_inv[cols][:, cols]) @ a_inv[cols])
    cross[rows] = 0.0
    cross[:, cols] = 0.0
    torch.testing.assert_close(summed + cross, sequential)
    # correlated == independent for a single structure; differ for two
    torch.testing.assert_close(row_update(w, g_inv, rows[:1], 0), row_update(w, g_inv, rows[:1], 1))
    assert not torch.allclose(row_update(w, g_inv, rows, 0), row_update(w, g_inv, rows, 1))


def test_costs_and_updates_are_invariant_to_rescaling_the_factors():
    w, g, a = rand((5, 4), 6), spd(5, 7), spd(4, 8)
    rows, cols = torch.tensor([2]), torch.tensor([1, 3])

    def run(g, a, damp):
        gi, ai = damped_inverse(g, damp), damped_inverse(a, damp)
        return row_costs(w, a, gi.diagonal()), col_costs(w, g, ai.diagonal()), surgery(w, gi, ai, rows, cols)

    base = run(g, a, 0.01)
    for got, want in zip(run(7.0 * g, a / 7.0, 0.01), base):  # (cG, A/c)
        torch.testing.assert_close(got, want)
    rc, cc, upd = run(3.0 * g, a, 0.0)  # undamped: costs scale with F, updates do not
    rc0, cc0, upd0 = run(g, a, 0.0)
    torch.testing.assert_close(rc, 3.0 * rc0)
    torch.testing.assert_close(cc, 3.0 * cc0)
    torch.testing.assert_close(upd, upd0)


# ---- T4: an exactly quadratic toy ----------------------------------------------------------
def test_removing_columns_with_identity_g_is_the_least_squares_refit():
    x = rand((50, 6), 9)  # [N, C] inputs
    w = rand((3, 6), 10)
    a = x.T @ x / 50
    cols = torch.tensor([1, 4])
    keep = torch.tensor([0, 2, 3, 5])
    out = surgery(w, torch.eye(3, dtype=torch.float64), damped_inverse(a, 0.0), torch.tensor([], dtype=torch.long), cols)
    refit = torch.linalg.lstsq(x[:, keep], x @ w.T).solution.T  # [3, 4]
    torch.testing.assert_close(out[:, keep], refit)
    assert (out[:, cols] == 0).all()
    # rows with G = I: the other rows do not move
    rows_out = surgery(w, torch.eye(3, dtype=torch.float64), damped_inverse(a, 0.0), torch.tensor([1]),
                       torch.tensor([], dtype=torch.long))
    torch.testing.assert_close(rows_out[[0, 2]], w[[0, 2]])


def test_sequential_update_minimises_the_quadratic_under_the_zero_constraints():
    w, g, a = rand((5, 6), 11), spd(5, 12), spd(6, 13)
    rows, cols = torch.tensor([0, 3]), torch.tensor([2])
    out = surgery(w, damped_inverse(g, 0.0), damped_inverse(a, 0.0), rows, cols, update="sequential")
    f = torch.kron(g, a)
    z = torch.tensor(entries({0, 3}, {2}, w.shape))
    free = torch.tensor([i for i in range(w.numel()) if i not in set(z.tolist())])
    delta = torch.zeros(w.numel(), dtype=torch.float64)
    delta[z] = -w.flatten()[z]
    delta[free] = -torch.linalg.solve(f[free][:, free], f[free][:, z] @ delta[z])
    torch.testing.assert_close(out, w + delta.view_as(w))


# ---- T5: zero structures -------------------------------------------------------------------
def test_a_zero_structure_costs_nothing_and_moves_nothing():
    w, g, a = rand((5, 6), 14), spd(5, 15), spd(6, 16)
    w[2] = 0.0
    w[:, 4] = 0.0
    gi, ai = damped_inverse(g, 0.01), damped_inverse(a, 0.01)
    assert float(row_costs(w, a, gi.diagonal())[2]) == 0.0
    assert float(col_costs(w, g, ai.diagonal())[4]) == 0.0
    torch.testing.assert_close(surgery(w, gi, ai, torch.tensor([2]), torch.tensor([4])), w, rtol=0, atol=0)


# ---- T6: dead structures propagate through the factors --------------------------------------
def test_a_zero_up_row_kills_the_down_column_and_a_zero_down_column_the_gate_and_up_rows():
    model = tiny_model("llama").double()
    layer = model.model.layers[1]
    with torch.no_grad():
        layer.mlp.up_proj.weight[5] = 0.0
        layer.mlp.down_proj.weight[:, 9] = 0.0
    factors = estimate_factors(model, adapter_for(model), sample_ids(2, 10))
    prefix = "model.layers.1.mlp."
    assert factors.a(prefix + "down_proj")[5, 5] == 0.0
    assert factors.g_of(prefix + "gate_proj")[9, 9] == 0.0 and factors.g_of(prefix + "up_proj")[9, 9] == 0.0
    assert factors.a(prefix + "down_proj")[4, 4] > 0 and factors.g_of(prefix + "up_proj")[8, 8] > 0


# ---- T7: threshold counting -----------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_counts_what_it_selects_and_stays_within_one_tie_group_of_the_budget(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 7), (3, 9), (8, 4)]
    mats = [MatrixCosts(torch.rand(r, generator=g, dtype=torch.float64), torch.rand(c, generator=g, dtype=torch.float64))
            for r, c in shapes]
    mats[1].rows[0] = -math.inf  # a dead row is always taken
    total = sum(r * c for r, c in shapes)
    budget = int(0.4 * total)
    thr = global_threshold(mats, budget)
    counted = sum(removed_entries(r, c, len(sr), len(sc)) for (r, c), (sr, sc) in zip(shapes, thr.selections))
    assert counted == thr.counted <= budget
    assert 0 in thr.selections[1][0].tolist()
    # the next structure would overshoot
    nxt = min(float(v) for m in mats for v in torch.cat([m.rows, m.cols]) if float(v) > thr.tau)
    over = global_threshold([MatrixCosts(torch.where(m.rows <= nxt, -math.inf, m.rows),
                                         torch.where(m.cols <= nxt, -math.inf, m.cols)) for m in mats], 0)
    assert over.counted > budget


def test_a_shot_zeroes_exactly_what_the_threshold_counted_and_masks_are_nested():
    model = tiny_model("qwen2").double()  # q/k/v biases: the bias column is a structure too
    adapter = adapter_for(model)
    linears = decoder_linears(model, adapter)
    total = linear_entries(linears)
    ids = sample_ids(4, 12)
    cfg = LLMSurgeonConfig()
    first = surgeon_shot(linears, estimate_factors(model, adapter, ids), int(0.2 * total), cfg)
    assert zero_entries(linears) == first["counted_entries"]
    masks = {n: (lin.weight == 0).clone() for n, lin in linears.items()}
    second = surgeon_shot(linears, estimate_factors(model, adapter, ids), int(0.35 * total), cfg)
    assert zero_entries(linears) == second["counted_entries"] <= int(0.35 * total)
    assert all((lin.weight[masks[n]] == 0).all() for n, lin in linears.items())
    for lin in linears.values():  # T11: a removed row takes its bias entry with it
        if lin.bias is not None:
            dead = (lin.weight == 0).all(dim=1)
            assert (lin.bias[dead] == 0).all()


# ---- T8: schedule ----------------------------------------------------------------------------
def test_each_shot_lands_on_its_linear_schedule_target():
    model = tiny_model("llama").double()
    linears = decoder_linears(model, adapter_for(model))
    total = linear_entries(linears)
    widest = max(max(lin.weight.shape) for lin in linears.values())
    reports = surgeon_prune(model, sample_ids(4, 12), int(0.5 * total), LLMSurgeonConfig(shots=3), log=lambda s: None)
    for t, report in enumerate(reports, start=1):
        target = int(round(0.5 * total * t / 3))
        assert report["target_entries"] == target
        assert target - widest <= report["zero_entries"] <= target


# ---- T9: physical removal equals masking, on every family; dress.load round trip ---------------
@pytest.mark.parametrize("model_type", COMPACT_TYPES)
def test_removing_dead_neurons_and_kv_groups_keeps_the_logits_and_reloads(model_type, tmp_path):
    import dress
    from dress.io.saving import save_model

    model = tiny_model(model_type).double()
    adapter = adapter_for(model)
    roles = layer_roles(adapter)
    surgeon_prune(model, sample_ids(4, 12), int(0.4 * linear_entries(decoder_linears(model, adapter))),
                  LLMSurgeonConfig(shots=2), log=lambda s: None)
    layer0 = adapter.decoder_layers(model)[0]
    v = layer0.get_submodule(roles.v)
    hd = layer0.get_submodule(roles.attention).head_dim
    with torch.no_grad():  # make KV group 0 of layer 0 dead so that a whole group goes
        v.weight[:hd] = 0.0
        if v.bias is not None:
            v.bias[:hd] = 0.0
    assert dead_kv_groups(layer0, roles)[0]
    ids = sample_ids(2, 16, seed=7)
    with torch.no_grad():
        masked = model(ids).logits
    before = parameter_count(model)
    kv_before = layer0.get_submodule(roles.k).out_features // hd
    widths = compact(model)
    with torch.no_grad():
        shrunk = model(ids).logits
    torch.testing.assert_close(shrunk, masked, rtol=0, atol=1e-10)
    assert widths[0]["kv_heads"] == kv_before - 1
    for layer, w in zip(adapter.decoder_layers(model), widths):
        assert layer.get_submodule(roles.down).in_features == w["ffn"]
    assert parameter_count(model) < before
    model.float()
    record = {"loader": "dress", "rebuild": {"method": REBUILD, "args": {"layers": widths}}}
    save_model(model, byte_tokenizer(), tmp_path / "out", record)
    loaded = dress.load(tmp_path / "out")
    assert parameter_count(loaded) == parameter_count(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


# ---- T12: recovery keeps the removed structures at zero ----------------------------------------
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_recovery_keeps_zero_rows_and_columns_at_zero(mode):
    from dress.training.recovery import recover

    model = tiny_model("qwen2")
    lin = model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        lin.weight[3] = 0.0
        lin.bias[3] = 0.0
        lin.weight[:, 7] = 0.0
        model.model.layers[1].mlp.down_proj.weight[:, 2] = 0.0
    before = {name: w.clone() for name, w in model.state_dict().items()}
    cfg = RecoveryConfig(mode=mode, steps=3, lr=1e-2)
    recovered, _ = recover(model, sample_ids(4, 12), cfg, keep_zero_structures=True)
    lin = recovered.model.layers[0].self_attn.q_proj
    assert (lin.weight[3] == 0).all() and lin.bias[3] == 0 and (lin.weight[:, 7] == 0).all()
    assert (recovered.model.layers[1].mlp.down_proj.weight[:, 2] == 0).all()
    assert (lin.weight[4] != 0).any() and (lin.weight[torch.arange(lin.weight.shape[0]) != 3, 6] != 0).all()
    # ... and it still trains: every targeted weight moved outside the protected structures (a
    # zero-initialised LoRA B once counted as "all rows zero" and was pinned, so nothing moved)
    rest = torch.ones_like(lin.weight, dtype=torch.bool)
    rest[3], rest[:, 7] = False, False
    assert (lin.weight[rest] != before["model.layers.0.self_attn.q_proj.weight"][rest]).float().mean() > 0.9
    down = recovered.model.layers[1].mlp.down_proj.weight
    assert not torch.equal(down[:, 3:], before["model.layers.1.mlp.down_proj.weight"][:, 3:])


def test_without_protection_recovery_would_fill_the_zeros():
    from dress.training.recovery import recover

    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[:, 2] = 0.0
    recovered, _ = recover(model, sample_ids(4, 12), RecoveryConfig(steps=3, lr=1e-2))
    assert (recovered.model.layers[0].mlp.down_proj.weight[:, 2] != 0).any()


def test_only_zero_rows_and_columns_count_as_removed():
    lin = nn.Linear(5, 4, bias=True).double()
    with torch.no_grad():
        lin.weight[1, 2] = 0.0  # an isolated zero (as dequantized checkpoints have): not a structure
        lin.weight[3] = 0.0  # a zero row, but its bias entry is not zero: not removed
        lin.weight[:, 4] = 0.0  # a zero column: 4 entries
    assert zero_entries({"x": lin}) == 4
    with torch.no_grad():
        lin.bias[3] = 0.0  # now row 3 is removed too: 6 entries (5 weights + bias), 1 shared with column 4
    assert zero_entries({"x": lin}) == 4 + 6 - 1
