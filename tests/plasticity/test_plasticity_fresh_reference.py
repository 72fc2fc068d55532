"""The fresh-network control of the stagnation score (issue 13): ~0 above fresh for a fresh
network, clearly above for one whose units stopped learning."""

from __future__ import annotations

import pytest
import torch
from plasticity_helpers import QmixNet, make_batch, stall_units

from knife.plasticity import StagnationMonitor
from knife.plasticity.fresh_reference import FreshReference

INTERVAL = 5


def _loss_fn(batch, seed):
    inputs, states, actions = batch
    target = torch.randn(states.shape[:2], generator=torch.Generator().manual_seed(seed))

    def loss(net):
        _, q_tot = net(inputs, states, actions)
        return (q_tot - target).square().mean()

    return loss


def _run(model, steps, constant_state, stall=None, train=False):
    """Live monitor on `model` and a fresh reference, on the same batches and loss."""
    monitor = StagnationMonitor(model)
    fresh = FreshReference(model, tau=0.25, beta=0.99, interval=INTERVAL, seed=123)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    handles = []
    for step in range(steps):
        if stall is not None and step == stall[0]:
            handles = stall_units(model, stall[1], 1e-4)
        batch = make_batch(step)
        if constant_state:  # a matrix game: the state is the constant 1.0
            batch = (batch[0], torch.ones_like(batch[1]), batch[2])
        loss_fn = _loss_fn(batch, step)
        opt.zero_grad()
        loss_fn(model).backward()
        if train:
            opt.step()
        monitor.update()
        if (step + 1) % INTERVAL == 0:
            fresh.measure(loss_fn)
    for h in handles:
        h.remove()
    return monitor, fresh


@pytest.mark.parametrize("constant_state", [False, True], ids=["random_state", "constant_state"])
def test_a_fresh_network_is_not_stagnant_above_fresh(constant_state):
    torch.manual_seed(0)
    monitor, fresh = _run(QmixNet(), 100, constant_state)
    metrics = fresh.metrics(monitor)
    for net in ("agent", "mixer", "all"):
        assert abs(metrics[f"stagnant_above_fresh/{net}"]) <= 0.08, (net, metrics)
    if constant_state:
        # Half the hypernetwork ReLUs are dead from init here: dead, not stagnant, in both.
        assert monitor.dead_fraction()["dead_since_init_fraction/mixer.hyper_w1.0"] > 0.2
        assert fresh.monitor.dead_fraction()["dead_since_init_fraction/mixer.hyper_w1.0"] > 0.2


def test_units_that_stopped_learning_are_stagnant_above_fresh():
    torch.manual_seed(0)
    stalled = {"agent.fc1.0": torch.arange(24), "mixer.hyper_w1.0": torch.arange(24)}
    monitor, fresh = _run(QmixNet(), 500, False, stall=(20, stalled), train=True)
    metrics = fresh.metrics(monitor)
    assert metrics["stagnant_above_fresh/agent.fc1.0"] >= 0.25
    assert metrics["stagnant_above_fresh/mixer.hyper_w1.0"] >= 0.25
    assert metrics["fresh_stagnant_fraction/agent.fc1.0"] < 0.2


def test_building_the_reference_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    model = QmixNet()
    state = torch.random.get_rng_state()
    FreshReference(model, tau=0.25, beta=0.99, interval=20, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    a = FreshReference(model, tau=0.25, beta=0.99, interval=20, seed=1).net.state_dict()
    b = FreshReference(model, tau=0.25, beta=0.99, interval=20, seed=1).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same fresh copy for a seed
    live = model.state_dict()
    assert not torch.equal(a["agent.fc1.0.weight"], live["agent.fc1.0.weight"])
