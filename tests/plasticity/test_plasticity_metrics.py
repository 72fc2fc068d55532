"""Metrics users compare against: ReDo dormancy, GraMa, effective rank, norms."""

from __future__ import annotations

import pytest
import torch
from plasticity_helpers import td_loss
from torch import nn

from knife.plasticity import (
    StagnationMonitor,
    activation_scores,
    capture_features,
    dormant_fraction,
    dormant_masks,
    effective_rank,
    feature_norm,
    gradient_norm,
    grama_scores,
    mean_abs_activations,
    plasticity_metrics,
    weight_norm,
)


def _kill(model, units_by_layer):
    """Make units dead (ReLU output exactly 0) with a very negative bias."""
    with torch.no_grad():
        for layer, units in units_by_layer.items():
            layer.bias[units] = -1e4


def test_dormant_units_by_activation(model, batch):
    _kill(model, {model.agent.fc1[0]: [1, 2], model.mixer.hyper_w1[0]: [4]})
    masks = dormant_masks(model, batch)
    assert masks["agent.fc1.0"][[1, 2]].all() and masks["mixer.hyper_w1.0"][4]
    assert masks["agent.fc1.0"].sum() == 2
    frac = dormant_fraction(model, batch)
    assert frac["dormant_fraction/agent.fc1.0"] == 2 / 64
    assert {"dormant_fraction/agent", "dormant_fraction/mixer", "dormant_fraction/all"} <= set(frac)
    # activation scores by hand for one layer
    inputs = batch[0].reshape(-1, batch[0].shape[-1])
    a = torch.relu(model.agent.fc1[0](inputs)).abs().mean(0)
    torch.testing.assert_close(activation_scores(model, batch)["agent.fc1.0"], a / a.mean())


def test_batch_can_be_a_callable(model, batch):
    calls = []

    def run():
        calls.append(1)
        return model(*batch)

    scores = activation_scores(model, run)
    assert calls == [1] and set(scores) >= {"agent.fc1.0", "agent.rnn"}


def test_grama_scores_by_hand(model, batch):
    td_loss(model, batch).backward()
    lin = model.mixer.value[0]
    m = torch.cat([lin.weight.grad.abs(), lin.bias.grad.abs()[:, None]], 1).mean(1)
    torch.testing.assert_close(grama_scores(model)["mixer.value.0"], m / m.mean())


def test_effective_rank_and_norms():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(200, 3, generator=g) @ torch.randn(3, 16, generator=g)
    assert effective_rank(low) <= 3
    assert effective_rank(torch.randn(500, 8, generator=g)) == 8
    assert 1.0 < effective_rank(torch.randn(500, 8, generator=g), method="entropy") <= 8
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert feature_norm(x) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="srank"):
        effective_rank(x, method="nope")


def test_weight_grad_norms_and_all_metrics(model, batch):
    td_loss(model, batch).backward()
    wn = weight_norm(model)
    expect = torch.sqrt(sum(p.detach().square().sum() for p in model.agent.parameters()))
    assert wn["weight_norm/agent"] == pytest.approx(float(expect), rel=1e-5)
    assert gradient_norm(model)["grad_norm/mixer"] > 0
    feats = capture_features(model, batch, ["agent.rnn"])["agent.rnn"]
    assert feats.shape == (4 * 6 * 3, 64)
    mon = StagnationMonitor(model)
    mon.update()
    out = plasticity_metrics(model, batch=batch, monitor=mon)
    for key in (
        "stagnant_fraction/agent",
        "dormant_fraction/mixer",
        "grama_fraction/agent",
        "effective_rank/agent",
        "feature_norm/mixer",
        "weight_norm/agent",
        "grad_norm/agent",
        "volatile_fraction/all",
    ):
        assert isinstance(out[key], float), key


def test_inplace_activation_not_applied_twice():
    net = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.1, inplace=True), nn.Linear(4, 1))
    x = torch.randn(10, 3)
    before = net(x)
    activation_scores(net, x)
    assert torch.equal(before, net(x))


class LoopGru(nn.Module):
    """A GRUCell called step by step (its own forward runs), followed by a head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
        self.cell = nn.GRUCell(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):  # x [B, T, 5]
        h = torch.zeros(x.shape[0], 8)
        outs = []
        for t in range(x.shape[1]):
            h = self.cell(self.enc(x[:, t]), h)
            outs.append(self.head(h))
        return torch.stack(outs, 1)


def test_gru_units_captured_from_own_forward_or_consumer_input(model, batch):
    net = LoopGru()
    x = torch.randn(4, 7, 5)
    hs = []
    h = torch.zeros(4, 8)
    with torch.no_grad():
        for t in range(7):
            h = net.cell(net.enc(x[:, t]), h)
            hs.append(h)
    expect = torch.cat(hs).abs().mean(0)
    torch.testing.assert_close(mean_abs_activations(net, x)["cell"], expect)
    # the QMIX agent's unroll may bypass GRUCell.forward (fused kernel): the hidden states are
    # then read as the input of agent.fc2
    feats = capture_features(model, batch, ["agent.rnn"])["agent.rnn"]
    with torch.no_grad():
        q = model.agent.fc2(feats)
    qs, _ = _out(model, batch)
    # same hidden states, whatever order the steps were visited in
    sort = lambda v: v.reshape(-1, v.shape[-1]).sort(0).values  # noqa: E731
    torch.testing.assert_close(sort(q), sort(qs))


def _out(model, batch):
    with torch.no_grad():
        return model(*batch)
