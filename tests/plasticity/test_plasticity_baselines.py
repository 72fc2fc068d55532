"""Baselines (DESIGN 8): each shows its defining property; optimizer state handled in place."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from plasticity_helpers import QmixNet, stall_units, td_loss, train, trainable_count

from knife.plasticity import (
    InjectedModule,
    StagnationMonitor,
    activation_scores,
    build_intervention,
    dormant_masks,
    install_from_state_dict,
)

OPTIMIZERS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=5e-4, momentum=0.9, centered=True),
}


def _out(model, batch):
    with torch.no_grad():
        return model(*batch)


def _close(a, b, atol=1e-6):
    return all((x - y).abs().max() <= atol for x, y in zip(a, b, strict=True))


def _moments(opt, p):
    return {k: v.clone() for k, v in opt.state[p].items() if v.shape == p.shape}


def _kill(layer, units):
    with torch.no_grad():
        layer.bias[units] = -1e4  # ReLU output exactly 0 on any input: dead


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_redo_reinits_only_dormant_units_keeps_output_and_resets_moments(model, batch, opt_name):
    opt = OPTIMIZERS[opt_name](model.parameters())
    train(model, opt, batch, 3)
    fc1, rnn, hw1, hw1_out = (
        model.agent.fc1[0],
        model.agent.rnn,
        model.mixer.hyper_w1[0],
        model.mixer.hyper_w1[2],
    )
    _kill(fc1, [1, 2])
    _kill(hw1, [4])
    dormant = dormant_masks(model, batch)
    assert dormant["agent.fc1.0"].nonzero().flatten().tolist() == [1, 2]
    snap = {p: p.detach().clone() for p in model.parameters()}
    mom = {
        p: _moments(opt, p)
        for p in (fc1.weight, fc1.bias, rnn.weight_ih, hw1.weight, hw1_out.weight)
    }
    assert all(v.abs().sum() > 0 for m in mom.values() for v in m.values())
    before = _out(model, batch)

    s = build_intervention("redo").apply(model, opt, batch=batch)

    assert _close(before, _out(model, batch))  # outgoing weights zeroed: output kept
    for path, mask in dormant.items():
        if path != "agent.rnn":
            assert s.units_changed[path] == int(mask.sum())
    changed = (fc1.weight.detach() != snap[fc1.weight]).any(1)
    assert changed.nonzero().flatten().tolist() == [1, 2]  # only dormant units re-initialized
    assert (rnn.weight_ih[:, [1, 2]] == 0).all() and (hw1_out.weight[:, 4] == 0).all()
    assert not dormant_masks(model, batch)["agent.fc1.0"][[1, 2]].any()
    # optimizer moments: zero for re-initialized rows / zeroed columns, untouched elsewhere
    for key, old in mom[fc1.weight].items():
        new = opt.state[fc1.weight][key]
        assert (new[[1, 2]] == 0).all()
        keep = torch.ones(64, dtype=torch.bool)
        keep[[1, 2]] = False
        assert torch.equal(new[keep], old[keep])
    for key, old in mom[rnn.weight_ih].items():
        new = opt.state[rnn.weight_ih][key]
        assert (new[:, [1, 2]] == 0).all()
        assert torch.equal(new[:, 3:], old[:, 3:]) and torch.equal(new[:, :1], old[:, :1])
    for key, old in mom[hw1.weight].items():
        new = opt.state[hw1.weight][key]
        assert (new[4] == 0).all() and torch.equal(new[:4], old[:4])
    train(model, opt, batch, 2)  # the optimizer keeps working on the same parameters


def test_regrama_reinits_low_gradient_units(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train(model, opt, batch, 2)
    handles = stall_units(model, {"mixer.value.0": torch.tensor([3, 8])})
    opt.zero_grad()
    td_loss(model, batch).backward()
    for h in handles:
        h.remove()
    w = model.mixer.value[0].weight
    old = w.detach().clone()
    out_w = model.mixer.value[2].weight.detach().clone()
    moments = opt.state[w]["exp_avg"].clone()
    s = build_intervention("regrama", scope="mixer.value").apply(model, opt)
    changed = (w.detach() != old).any(1).nonzero().flatten().tolist()
    assert {3, 8} <= set(changed) and len(changed) == s.units_changed["mixer.value.0"]
    assert torch.equal(model.mixer.value[2].weight, out_w)  # outgoing kept
    assert torch.equal(opt.state[w]["exp_avg"], moments)  # the paper's code keeps the state
    build_intervention("regrama", scope="mixer.value", reset_optimizer=True).apply(model, opt)
    assert (opt.state[w]["exp_avg"][[3, 8]] == 0).all()  # optional, as its README says


def test_shrink_perturb_follows_formula(model):
    torch.manual_seed(1)
    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    build_intervention("shrink_perturb", shrink=0.8, perturb=0.0).apply(model, None)
    for n, p in model.named_parameters():
        assert torch.equal(p, old[n] * 0.8), n

    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    s = build_intervention("shrink_perturb", shrink=0.8, perturb=0.01).apply(model, None)
    assert s.units_changed["agent.rnn"] == 64 and s.units_changed["mixer.hyper_b1"] == 32
    for n, p in model.named_parameters():
        noise = (p.detach() - 0.8 * old[n]) / 0.01  # theta_fresh from the layer's own init
        if "rnn" in n:
            bound = 1 / 64**0.5
        else:
            w = dict(model.named_parameters())[n.rsplit(".", 1)[0] + ".weight"]
            bound = 1 / w.shape[1] ** 0.5
        assert noise.abs().max() <= bound * (1 + 1e-3), n
        if noise.numel() > 10:
            assert noise.std() > bound / 4, n  # a real fresh draw, not zero


def test_reset_reinitializes_exactly_the_scope(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train(model, opt, batch, 2)
    agent_before = {n: p.detach().clone() for n, p in model.agent.named_parameters()}
    mixer_before = {n: p.detach().clone() for n, p in model.mixer.named_parameters()}
    agent_state = {p: _moments(opt, p) for p in model.agent.parameters()}
    target = copy.deepcopy(model)
    s = build_intervention("reset", scope="mixer").apply(model, opt, target=target)
    for n, p in model.agent.named_parameters():
        assert torch.equal(p, agent_before[n]), n
        for k, v in agent_state[p].items():
            assert torch.equal(opt.state[p][k], v)
    for n, p in model.mixer.named_parameters():
        assert not torch.equal(p, mixer_before[n]), n
        assert all((v == 0).all() for v in _moments(opt, p).values())
        assert int(opt.state[p]["step"]) == 0
    assert set(s.units_changed) == {
        "mixer.hyper_w1.0", "mixer.hyper_w1.2", "mixer.hyper_w_final.0",
        "mixer.hyper_w_final.2", "mixer.hyper_b1", "mixer.value.0", "mixer.value.2",
    }  # fmt: skip
    # The target keeps its values (the switch protocol, not the method, syncs targets).
    for n, p in target.mixer.named_parameters():
        assert torch.equal(p, mixer_before[n]), n
    train(model, opt, batch, 1)


def test_plasticity_injection_keeps_output_and_params(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train(model, opt, batch, 2)
    target = copy.deepcopy(model)
    ids = [id(p) for p in model.parameters()]
    n = trainable_count(model)
    agent = model.agent
    fc1_old = agent.fc1[0].weight.detach().clone()
    head_old = {k: v.clone() for k, v in agent.rnn.state_dict().items()}
    fc2_old = agent.fc2.weight.detach().clone()
    before = _out(model, batch)
    s = build_intervention("plasticity_injection").apply(model, opt, target=target)
    # Nikishin et al. 2023 on the recurrent agent: a new GRU + Q head next to the frozen old
    # head (and a frozen copy of the new one), on the encoder fc1, which keeps training.
    assert {"agent.rnn", "agent.fc2"} <= set(s.units_changed)
    assert "agent.fc1.0" not in s.units_changed and torch.equal(agent.fc1[0].weight, fc1_old)
    assert len(agent.head_terms) == 2 and agent.head_signs.tolist() == [1.0, -1.0]
    old_term, new0_term = agent.head_terms
    assert torch.equal(old_term.fc2.weight, fc2_old)  # frozen old head ...
    assert all(torch.equal(old_term.rnn.state_dict()[k], v) for k, v in head_old.items())
    assert not torch.equal(agent.fc2.weight, fc2_old)  # ... the live head is re-initialized
    assert torch.equal(new0_term.fc2.weight, agent.fc2.weight)  # compensation = fresh head
    assert not any(p.requires_grad for p in agent.head_terms.parameters())  # buffers only
    assert agent.state_dim == 3 * agent.hidden_dim  # one GRU state per head term
    # The mixer is injected at its hypernetworks (before abs: Q_tot stays monotone).
    hypernets = ("hyper_w1", "hyper_w_final", "hyper_b1", "value")
    assert all(isinstance(getattr(model.mixer, h), InjectedModule) for h in hypernets)
    assert _close(before, _out(model, batch), atol=1e-5)
    assert [id(p) for p in model.parameters()] == ids and trainable_count(model) == n
    assert model.mixer.n_agents == 3  # attributes still reachable through the wrapper
    assert int(opt.state[agent.fc2.weight]["step"]) == 0
    assert int(opt.state[agent.rnn.weight_hh]["step"]) == 0
    assert model.state_dict().keys() == target.state_dict().keys()
    assert target.agent.state_dim == agent.state_dim
    # The step-by-step forward (EnvRunners) agrees with the unroll (the learner).
    inputs = batch[0]
    h = agent.initial_state(inputs.shape[0], inputs.shape[2])
    steps = []
    with torch.no_grad():
        for t in range(inputs.shape[1]):
            q_t, h = agent(inputs[:, t], h)
            steps.append(q_t)
        torch.testing.assert_close(torch.stack(steps, 1), _out(model, batch)[0], atol=1e-5, rtol=0)

    train(model, opt, batch, 3)
    after = _out(model, batch)
    assert not _close(before, after)  # it learns
    before2 = after
    build_intervention("plasticity_injection").apply(model, opt)  # repeated injection
    assert len(model.mixer.hyper_w1.frozen) == 4 and len(model.agent.head_terms) == 4
    assert _close(before2, _out(model, batch))

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    fresh = QmixNet()
    sd = torch.load(io.BytesIO(buf.getvalue()))
    install_from_state_dict(fresh, sd)
    fresh.load_state_dict(sd)
    for x, y in zip(_out(model, batch), _out(fresh, batch), strict=True):
        assert torch.equal(x, y)


def test_reborn_transfers_like_its_public_code_and_keeps_the_output(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train(model, opt, batch, 2)
    layer, consumer = model.mixer.hyper_w_final[0], model.mixer.hyper_w_final[2]
    with torch.no_grad():  # two over-active units (score > beta = 3) and three dead ones
        layer.weight[[1, 2]] *= 30.0
        layer.bias[[1, 2]] += 30.0
    _kill(layer, [0, 6, 11])
    path = "mixer.hyper_w_final.0"
    score = activation_scores(model, batch, scope=path)[path]
    dormant = (score <= 0.1).nonzero().flatten().tolist()  # tau = 0.1
    assert {0, 6, 11} <= set(dormant) and (score > 3).nonzero().flatten().tolist() == [1, 2]
    hw1 = copy.deepcopy(model.mixer.hyper_w1.state_dict())
    w_out_before = consumer.weight.detach().clone()
    consumer_moments = _moments(opt, consumer.weight)
    before = _out(model, batch)
    s = build_intervention("reborn").apply(model, opt, batch=batch)
    assert s.units_changed[path] == len(dormant)
    assert "mixer.hyper_w1.0" not in s.units_changed  # not a layer ReBorn's code touches
    assert all(torch.equal(v, model.mixer.hyper_w1.state_dict()[k]) for k, v in hw1.items())
    # Kept up to the dormant units' own previous contribution (<= 10% of the mean's).
    scale = max(float(x.abs().max()) for x in before)
    assert _close(before, _out(model, batch), atol=0.02 * scale)
    w, b, w_out = layer.weight.detach(), layer.bias.detach(), consumer.weight.detach()
    given: dict[int, list[tuple[int, float]]] = {1: [], 2: []}
    leftovers = []
    for k in dormant:
        owner = [j for j in (1, 2) if torch.allclose(w[k], (w[k, 0] / w[j, 0]) * w[j], rtol=1e-4)]
        if not owner:
            leftovers.append(k)
            assert (w_out[:, k] == 0).all()  # fresh incoming, zero outgoing
            continue
        alpha = float(w[k, 0] / w[owner[0], 0])
        assert 0.3 <= alpha <= 0.8  # alpha ~ U(0.3, 0.8)
        torch.testing.assert_close(b[k], alpha * b[owner[0]], rtol=1e-4, atol=1e-6)
        given[owner[0]].append((k, alpha))
    assert all(len(g) <= 5 for g in given.values())  # at most 5 per over-active unit
    assert not leftovers or all(len(g) == 5 for g in given.values())
    for j, units in given.items():
        # The softmax split hands out j's outgoing weights: the consumer sees the same sum.
        total = w_out[:, j] + sum(alpha * w_out[:, k] for k, alpha in units)
        torch.testing.assert_close(total, w_out_before[:, j], rtol=1e-4, atol=1e-6)
    # ReBorn's code resets no optimizer state.
    for key, value in consumer_moments.items():
        assert torch.equal(opt.state[consumer.weight][key], value), key


def test_none_changes_nothing(model, batch):
    before = copy.deepcopy(model.state_dict())
    none = build_intervention("none")
    assert not none.should_fire("task_switch", 0) and not none.should_fire("update", 100)
    s = none.apply(model, torch.optim.Adam(model.parameters()), batch=batch)
    assert s.total_changed == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_interventions_reset_monitor_for_changed_units(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = StagnationMonitor(model)
    handles = stall_units(model, {"agent.fc1.0": torch.tensor([5])})
    train(model, opt, batch, 3, mon)
    for h in handles:
        h.remove()
    assert mon.dead_masks()["agent.fc1.0"][5]  # no gradient since initialization
    assert mon.candidate_masks()["agent.fc1.0"][5]
    build_intervention("knife", scope="agent").apply(model, opt, monitor=mon)
    assert not mon.candidate_masks()["agent.fc1.0"][5]  # judged afresh after injection
    train(model, opt, batch, 1, mon)
    assert not mon.dead_masks()["agent.fc1.0"][5]  # the fresh active part gets a gradient
