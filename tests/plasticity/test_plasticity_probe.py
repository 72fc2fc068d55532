"""The trainability probe (knife.plasticity.probe; Lyle et al. 2023) on the project's own
agent and mixer: dead networks score far worse than fresh ones, a fresh network scores ~1,
the cost is reported, and the probed network, its optimizer and the RNG are untouched."""

from __future__ import annotations

import pytest
import torch
from plasticity_helpers import B, N, td_loss
from torch import nn

from knife.plasticity.config import PlasticityConfig
from knife.plasticity.init import fresh_copy
from knife.plasticity.probe import TrainabilityProbe

# A fresh network of another seed fits the probe's targets within this factor of the
# probe's own fresh network, which is one draw too: on this 72-row batch, 32 draws read
# 0.80-1.56 (agent, probe seeds 0 and 3) and 0.997-1.007 (mixer).
FRESH_TOLERANCE = 2.0
# Every ReLU dead: measured ratios 47 (agent: fc1 dead, only the GRU's drift over time is
# left to fit) and 54 (mixer: hypernetwork and V ReLUs dead) at the default settings.
DEAD_AT_LEAST = 8.0


def _agent_run(batch):
    inputs = batch[0]

    def run(agent: nn.Module) -> torch.Tensor:
        return agent.unroll(inputs, torch.zeros(B, N, agent.state_dim))  # [B, T, N, A]

    return run


def _mixer_run(batch, model):
    inputs, states, actions = batch
    with torch.no_grad():
        qs, _ = model(inputs, states, actions)
        chosen = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [B, T, N]

    def run(mixer: nn.Module) -> torch.Tensor:
        return mixer(chosen, states).unsqueeze(-1)  # one output feature: [B, T, 1]

    return run


def _kill_relus(network: nn.Module) -> nn.Module:
    """Every Linear followed by a ReLU gets a bias so negative that the ReLU outputs 0 on
    any input: no gradient reaches those units or anything before them."""
    dead = fresh_copy(network, 7)
    for module in dead.modules():
        if isinstance(module, nn.Sequential):
            for layer, act in zip(module, list(module)[1:], strict=False):
                if isinstance(layer, nn.Linear) and isinstance(act, nn.ReLU):
                    with torch.no_grad():
                        layer.bias.fill_(-1e3)
    return dead


def _networks(model, batch):
    return {
        "agent": (model.agent, _agent_run(batch)),
        "mixer": (model.mixer, _mixer_run(batch, model)),
    }


@pytest.mark.parametrize("name", ["agent", "mixer"])
def test_dead_relus_score_far_worse_than_a_fresh_network(model, batch, name):
    network, run = _networks(model, batch)[name]
    probe = TrainabilityProbe(seed=0)
    dead = probe.measure(_kill_relus(network), run)
    fresh = probe.measure(fresh_copy(network, 11), run)
    print(f"{name}: dead {dead}\n{name}: fresh {fresh}")
    assert dead.ratio > DEAD_AT_LEAST
    assert 1 / FRESH_TOLERANCE < fresh.ratio < FRESH_TOLERANCE
    assert fresh.loss < 0.1  # a fresh network explains most of the targets' variance
    if name == "agent":
        # A blind agent cannot fit what depends on the inputs: its loss stays near 1 (the
        # targets' variance). The dead mixer still fits ~95% through hyper_b1 (no ReLU)
        # and its now constant monotone mixing, ~1e4 times a fresh mixer's loss.
        assert dead.loss > 0.5


@pytest.mark.parametrize("name", ["agent", "mixer"])
def test_a_fresh_network_scores_one_relative_to_itself(model, batch, name):
    network, run = _networks(model, batch)[name]
    probe = TrainabilityProbe(seed=3)
    # Drawn like the probe's own fresh network: both fits are the same computation.
    twin = fresh_copy(network, probe.fresh_seed)
    assert probe.measure(twin, run).ratio == 1.0
    for seed in (21, 22, 23):
        ratio = probe.measure(fresh_copy(network, seed), run).ratio
        assert 1 / FRESH_TOLERANCE < ratio < FRESH_TOLERANCE, (seed, ratio)


def test_cost_is_reported_and_results_are_reproducible(model, batch):
    network, run = _networks(model, batch)["agent"]
    probe = TrainabilityProbe(steps=20, seed=5)
    first, second = probe.measure(network, run), probe.measure(network, run)
    assert first.seconds > 0 and first.steps == 2 * 20
    assert (first.loss, first.fresh_loss, first.ratio) == (
        second.loss,
        second.fresh_loss,
        second.ratio,
    )
    metrics = first.to_metrics("agent")
    assert metrics["probe_loss_ratio/agent"] == first.ratio
    assert metrics["probe_seconds/agent"] == first.seconds
    other = TrainabilityProbe(steps=20, seed=6).measure(network, run)
    assert other.loss != first.loss  # another seed: other targets


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer):
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
    state = {
        i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
        for i, s in enumerate(optimizer.state.values())
    }
    return params, grads, state


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("grads_left", [False, True])
def test_the_probed_network_its_optimizer_and_the_rng_are_untouched(model, batch, grads_left):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for seed in range(3):  # real Adam moments and step counts
        optimizer.zero_grad()
        td_loss(model, batch, seed).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if grads_left:  # as in the Learner's hook: this update's gradients still populated
        td_loss(model, batch, 9).backward()
    before = _snapshot(model, optimizer)
    rng = torch.get_rng_state()
    probe = TrainabilityProbe(steps=10)
    for network, run in _networks(model, batch).values():
        probe.measure(network, run)
    after = _snapshot(model, optimizer)
    assert _same(before[0], after[0])  # parameters and buffers byte-identical
    assert _same(before[1], after[1])  # gradients: none stay none, populated ones unchanged
    assert _same(before[2], after[2])  # the optimizer's moments and steps
    assert torch.equal(rng, torch.get_rng_state())


def test_masked_outputs_do_not_count():
    """Padding rows (mask 0) change nothing: the probe on a batch with extra masked rows of
    garbage reads the same as on the real rows alone (a row-wise MLP)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    x = torch.randn(40, 8)
    padded = torch.cat([x, 100 * torch.randn(24, 8)])
    mask = torch.cat([torch.ones(40, 1), torch.zeros(24, 1)])
    probe = TrainabilityProbe(steps=30)
    plain, masked = probe.measure(net, x), probe.measure(net, padded, mask=mask)
    assert masked.loss == pytest.approx(plain.loss, rel=1e-4)
    assert masked.fresh_loss == pytest.approx(plain.fresh_loss, rel=1e-4)


def test_schedule_at_switches_and_every_n_updates():
    probe = TrainabilityProbe(every=50)
    assert probe.should_run("task_switch", 7)
    assert [n for n in range(1, 160) if probe.should_run("update", n)] == [50, 100, 150]
    assert not TrainabilityProbe(every=0).should_run("update", 100)  # 0: only at switches
    assert not TrainabilityProbe(at_switch=False).should_run("task_switch", 1)
    with pytest.raises(ValueError, match="event: unknown 'swtich'"):
        probe.should_run("swtich", 1)


def test_probe_config_defaults_and_errors_name_the_field():
    config = PlasticityConfig.from_mapping(None).probe
    assert (config.at_switch, config.every, config.steps, config.lr, config.batch) == (
        True,
        0,
        100,
        0.001,
        4,
    )
    assert PlasticityConfig.from_mapping({"probe": {"every": 500}}).to_dict()["probe"]["every"] == (
        500
    )
    for raw, message in (
        ({"steps": 0}, r"plasticity.probe.steps: must be an integer >= 1"),
        ({"every": -1}, r"plasticity.probe.every: must be an integer >= 0"),
        ({"lr": "fast"}, r"plasticity.probe.lr: must be a number > 0"),
        ({"batch": 0.5}, r"plasticity.probe.batch: must be an integer >= 1 \(episodes\)"),
        ({"at_switch": "yes"}, r"plasticity.probe.at_switch: must be true or false"),
        ({"step": 10}, r"plasticity.probe.step: unknown key; allowed: at_switch, every"),
    ):
        with pytest.raises(ValueError, match=message):
            PlasticityConfig.from_mapping({"probe": raw})
    with pytest.raises(ValueError, match="plasticity.probe: must be a mapping"):
        PlasticityConfig.from_mapping({"probe": 100})
