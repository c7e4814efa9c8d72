"""TRSP's own mechanics on tiny models: stage 2's update penalty, its gate shrink making removal exact,
and the end-to-end result equal to the gated model minus the chosen layers. (Layer removal and gates
themselves: methods/depth/tests; the CLI run of every layer method: there too.)"""

from __future__ import annotations

import pytest
import torch

from dress.methods import get as get_method
from dress.methods.depth.config import DepthConfig
from dress.methods.trsp.config import TRSPConfig
from dress.pruning.gates import LayerGates
from tiny_models import MODEL_TYPES, method_context as context, one_thread, sample_ids, tiny_model  # noqa: F401 (one_thread: an autouse fixture)

ATOL = 1e-5


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("model_type", ["llama", "phi"])
def test_trsp_stage2_shrinks_the_chosen_layers_updates(model_type, tmp_path):
    ids = sample_ids(batch=4, seq=16)

    def run(lam2: float) -> dict:
        model = tiny_model(model_type)
        trsp = TRSPConfig(lam1=0.05, steps1=4, lam2=lam2, steps2=8, lr=3e-3, gate_lr=0.0, warmup_steps=0, shrink2=0.0)
        ctx = context(model, "trsp", ids, tmp_path / str(lam2), depth=DepthConfig(layers=1), trsp=trsp)
        return get_method("trsp").function()(ctx).report["trsp"]

    # gate_lr is 0 in stage 2 too: only the weights can shrink the update, so this tests the penalty.
    penalized, free = run(10.0), run(0.0)
    layer = str(penalized["chosen"][0])
    assert penalized["update_ratio"][layer] < 0.7
    assert penalized["update_ratio"][layer] < free["update_ratio"][layer] - 0.2


@pytest.mark.parametrize("model_type", ["llama", "phi"])
def test_trsp_stage2_gate_shrink_zeroes_the_chosen_layers_and_makes_removal_exact(model_type, tmp_path):
    ids = sample_ids(batch=4, seq=16)
    trsp = TRSPConfig(lam1=0.05, steps1=4, lam2=0.0, steps2=6, lr=3e-3, warmup_steps=0, shrink2=1.5)
    ctx = context(tiny_model(model_type), "trsp", ids, tmp_path, depth=DepthConfig(layers=1), trsp=trsp)
    outcome = get_method("trsp").function()(ctx)
    chosen = outcome.report["trsp"]["chosen"][0]
    assert outcome.record["trsp_gates"]["final"][chosen] == 0.0
    assert outcome.report["trsp"]["update_ratio"][str(chosen)] == 0.0
    assert abs(outcome.report["prune_gap_nats"]) < 1e-4


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_trsp_end_to_end_records_gates_and_keeps_the_gated_behaviour(model_type, tmp_path):
    """With stage 2 off, the result equals the stage-1 gated model minus the chosen layers."""
    model, ids = tiny_model(model_type), sample_ids(batch=2, seq=12)
    trsp = TRSPConfig(lam1=1.0, steps1=3, steps2=0, gate_lr=0.1, warmup_steps=0)
    ctx = context(model, "trsp", ids, tmp_path, depth=DepthConfig(layers=1), trsp=trsp)
    outcome = get_method("trsp").function()(ctx)
    gates = outcome.record["trsp_gates"]["stage1"]
    chosen = outcome.report["trsp"]["chosen"]
    assert len(gates) == 3 and all(g < 1.0 for g in gates)  # the l1 term pulled every gate down
    assert chosen == [min(range(3), key=lambda i: abs(gates[i]))]
    assert outcome.record["layers_removed"] == chosen
    assert outcome.model.config.num_hidden_layers == 2
    assert not any("dress_gate" in n for n in outcome.model.state_dict())

    # Rebuild the gated model from scratch and zero the chosen gate: removal must match it.
    reference = tiny_model(model_type)
    ref_gates = LayerGates(reference)
    ref_gates.set([0.0 if i in chosen else g for i, g in enumerate(gates)])
    torch.testing.assert_close(logits(outcome.model, ids), logits(reference, ids), atol=ATOL, rtol=0.0)
