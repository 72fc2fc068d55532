"""StagnationMonitor (DESIGN 6): flags, hand-computed scores, GRU units, state."""

from __future__ import annotations

import pytest
import torch
from plasticity_helpers import stall_units, train
from torch import nn

from knife.plasticity import StagnationMonitor


def test_tiny_gradient_units_are_stagnant_and_zero_gradient_units_dead(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = StagnationMonitor(model, beta=0.9)  # a short EMA: the healthy start fades quickly
    # Dead from initialization: no gradient at any update.
    hz = stall_units(
        model, {"agent.fc1.0": torch.tensor([3]), "mixer.hyper_w1.0": torch.tensor([5])}
    )
    train(model, opt, batch, 5, mon)
    # Healthy for 5 updates, then their gradient is made tiny: they *became* stagnant.
    ht = stall_units(
        model, {"agent.fc1.0": torch.tensor([7]), "agent.rnn": torch.tensor([2, 9])}, 1e-4
    )
    train(model, opt, batch, 100, mon, seed=10)
    for h in hz + ht:
        h.remove()
    stagnant, dead = mon.stagnant_masks(), mon.dead_masks()
    assert stagnant["agent.fc1.0"][7]
    assert stagnant["agent.rnn"][2] and stagnant["agent.rnn"][9]  # GRU units are scored
    assert dead["agent.fc1.0"][3] and dead["mixer.hyper_w1.0"][5]
    assert not stagnant["agent.fc1.0"][3] and not stagnant["mixer.hyper_w1.0"][5]
    assert not dead["agent.fc1.0"][7] and not dead["agent.rnn"][2]
    assert mon.candidate_masks()["agent.fc1.0"][[3, 7]].all()  # KNIFE takes both kinds
    scores = mon.scores()
    normal = scores["agent.fc1.0"].argmax()  # the unit with the largest update ratio
    assert not stagnant["agent.fc1.0"][normal]
    assert stagnant["agent.fc1.0"].float().mean() < 0.5  # most units are healthy
    metrics = mon.metrics()
    assert metrics["stagnant_fraction/agent.fc1.0"] >= 1 / 64
    assert metrics["dead_since_init_fraction/agent.fc1.0"] >= 1 / 64
    assert set(metrics) >= {
        "stagnant_fraction/agent",
        "stagnant_fraction/mixer",
        "stagnant_fraction/all",
        "dead_since_init_fraction/all",
        "grad_ratio/p50/agent.rnn",
        "update_ratio/p10/mixer.hyper_w1.0",
    }
    # Absolute ratios are ordered percentiles, and the stalled GRU units sit in the low tail.
    ratios = mon.ratios()["agent.rnn"]
    p10, p90 = metrics["grad_ratio/p10/agent.rnn"], metrics["grad_ratio/p90/agent.rnn"]
    assert p10 <= metrics["grad_ratio/p50/agent.rnn"] <= p90
    assert float(ratios[2]) < p10
    assert all(isinstance(v, float) for v in metrics.values())
    # Restored from a checkpoint, the dead / stagnant split is the same.
    other = StagnationMonitor(model, beta=0.9)
    other.load_state_dict(mon.state_dict())
    assert all(torch.equal(other.dead_masks()[p], m) for p, m in dead.items())
    assert all(torch.equal(other.stagnant_masks()[p], m) for p, m in stagnant.items())


def _manual_linear_ratio(w, b, gw, gb, eps=1e-8):
    g = (gw.square().sum(1) + gb.square()).sqrt()
    n = (w.square().sum(1) + b.square()).sqrt()
    return g / (n + eps)


def test_scores_match_hand_computation_linear():
    lin = nn.Linear(4, 3)
    net = nn.Sequential(lin, nn.ReLU())
    mon = StagnationMonitor(net, tau=0.5, beta=0.9)
    r = []
    for step in range(2):
        with torch.no_grad():
            lin.weight.add_(0.1 * step)
        lin.weight.grad = torch.randn(3, 4)
        lin.bias.grad = torch.randn(3)
        r.append(_manual_linear_ratio(lin.weight, lin.bias, lin.weight.grad, lin.bias.grad))
        mon.update()
    ema = 0.9 * r[0] + 0.1 * r[1]  # first update initializes the EMA
    expect = ema / ema.mean()
    torch.testing.assert_close(mon.scores()["0"], expect)
    assert torch.equal(mon.stagnant_masks()["0"], expect < 0.5)
    assert torch.equal(mon.volatile_masks()["0"], expect > 4.0)


def test_scores_match_hand_computation_gru():
    cell = nn.GRUCell(3, 2)
    mon = StagnationMonitor(cell, beta=0.5)
    for p in cell.parameters():
        p.grad = torch.randn_like(p)
    mon.update()
    h = 2
    g2 = torch.zeros(h)
    w2 = torch.zeros(h)
    for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh):
        for gate in range(3):
            rows = slice(gate * h, (gate + 1) * h)
            g2 += p.grad[rows].reshape(h, -1).square().sum(1)
            w2 += p.detach()[rows].reshape(h, -1).square().sum(1)
    r = g2.sqrt() / (w2.sqrt() + 1e-8)
    torch.testing.assert_close(mon.scores()[""], r / r.mean())


def test_update_signal_uses_parameter_change():
    lin = nn.Linear(4, 2)
    net = nn.Sequential(lin, nn.Tanh())
    mon = StagnationMonitor(net, signal="update", beta=0.0)
    lin.weight.grad = torch.ones_like(lin.weight)  # both units have a gradient (not dead) ...
    with torch.no_grad():
        lin.weight[0] += 0.5  # ... but only unit 0 moves
    mon.update()
    s = mon.scores()["0"]
    assert s[0] > 1.9 and s[1] == 0
    assert mon.stagnant_masks()["0"].tolist() == [False, True]


def test_reset_and_state_dict_roundtrip(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = StagnationMonitor(model)
    train(model, opt, batch, 3, mon)
    state = mon.state_dict()
    other = StagnationMonitor(model)
    other.load_state_dict(state)
    for p, s in mon.scores().items():
        assert torch.equal(s, other.scores()[p])
    assert other.num_updates == 3
    mon.reset()
    assert mon.num_updates == 0
    assert mon.stagnant_fraction()["stagnant_fraction/all"] == 0.0
    hist = mon.score_histograms(bins=8)
    counts, edges = hist["stagnation_score/agent.fc1.0"]
    assert counts.sum() == 64 and edges.numel() == 9


def test_monitor_update_does_not_sync(model, batch):
    """update() must stay on device: no .item()/.tolist() inside it."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = StagnationMonitor(model)
    train(model, opt, batch, 1, mon)
    train(model, opt, batch, 1)  # fresh gradients for the patched update below
    calls = []
    orig_item, orig_tolist = torch.Tensor.item, torch.Tensor.tolist
    torch.Tensor.item = lambda self: calls.append("item") or orig_item(self)
    torch.Tensor.tolist = lambda self: calls.append("tolist") or orig_tolist(self)
    try:
        mon.update()
    finally:
        torch.Tensor.item, torch.Tensor.tolist = orig_item, orig_tolist
    assert calls == []


@pytest.mark.parametrize("tau", [0.0, -0.1, 1.5, 2])
def test_bad_tau_is_a_clear_error(model, tau):
    with pytest.raises(ValueError, match=r"tau must be in \(0, 1\]"):
        StagnationMonitor(model, tau=tau)


def test_bad_signal_lists_choices(model):
    with pytest.raises(ValueError, match="'grad', 'update'"):
        StagnationMonitor(model, signal="hessian")
