"""KNIFE on the real QMIX agent network and mixer (DESIGN 7, issue 3 "must show")."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from plasticity_helpers import QmixNet, stall_units, train, trainable_count

from knife.plasticity import (
    CompositeLinear,
    StagnationMonitor,
    build_intervention,
    find_unit_layers,
    install_composites,
    install_from_state_dict,
)

STALLED = {
    "agent.fc1.0": torch.arange(0, 64, 4),  # 16 units = 25 %
    "mixer.hyper_w1.0": torch.tensor([1, 5, 9, 33]),
    "mixer.hyper_w_final.0": torch.tensor([2, 40]),
    "mixer.value.0": torch.tensor([0, 7]),
}


@pytest.fixture
def warmed(model, batch):
    """Model + Adam + monitor after updates in which STALLED units got no gradient."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = StagnationMonitor(model)
    handles = stall_units(model, STALLED)
    train(model, opt, batch, 4, mon)
    for h in handles:
        h.remove()
    return model, opt, mon


def _out(model, batch):
    with torch.no_grad():
        return model(*batch)


def _assert_same(a, b, atol=1e-6):
    for x, y in zip(a, b, strict=True):
        assert (x - y).abs().max() <= atol, (x - y).abs().max()


def _frozen_state(model):
    return {
        f"{ly.path}.{n}": getattr(ly.module, n).clone()
        for ly in find_unit_layers(model, kinds=("linear",))
        if isinstance(ly.module, CompositeLinear)
        for n in ("knife_frozen_weight", "knife_frozen_bias", "knife_sign", "knife_index")
    }


def test_knife_preserves_output_freezes_k_and_c_and_keeps_param_count(warmed, batch):
    model, opt, mon = warmed
    target = copy.deepcopy(model)
    before = _out(model, batch)
    n_trainable = trainable_count(model)
    params_before = [id(p) for p in model.parameters()]
    old_rows = model.agent.fc1[0].weight[STALLED["agent.fc1.0"]].clone()

    summary = build_intervention("knife").apply(model, opt, monitor=mon, target=target)

    for path, units in STALLED.items():
        assert summary.units_changed[path] >= len(units)
    assert "agent.rnn" not in summary.units_changed  # GRU: measured, not injected
    _assert_same(before, _out(model, batch))
    assert trainable_count(model) == n_trainable
    assert [id(p) for p in model.parameters()] == params_before  # optimizer still valid
    comp = model.agent.fc1[0]
    assert isinstance(comp, CompositeLinear)
    k = comp.knife_sign > 0
    assert k.sum() == summary.units_changed["agent.fc1.0"]
    injected = comp.knife_index[k]
    assert set(STALLED["agent.fc1.0"].tolist()) <= set(injected.tolist())
    sel = torch.isin(injected, STALLED["agent.fc1.0"])
    assert torch.equal(comp.knife_frozen_weight[k][sel], old_rows)  # K = old incoming weights
    # C = fresh A at injection
    assert torch.equal(comp.knife_frozen_weight[~k], comp.weight[comp.knife_index[~k]])

    frozen = _frozen_state(model)
    live = comp.weight.detach().clone()
    train(model, opt, batch, 30, mon)
    after = _frozen_state(model)
    assert frozen.keys() == after.keys() and len(frozen) == 16
    for key, value in frozen.items():
        assert torch.equal(value, after[key]), key  # bit-identical after many steps
    moved = (comp.weight.detach() - live)[injected].abs().sum(1)
    assert (moved > 0).all()  # every active part learns
    assert trainable_count(model) == n_trainable


def test_second_injection_of_same_unit_preserves_output(warmed, batch):
    model, opt, mon = warmed
    knife = build_intervention("knife", scope="agent")
    knife.apply(model, opt, monitor=mon)
    train(model, opt, batch, 5, mon)
    comp = model.agent.fc1[0]
    n_rows = comp.n_frozen
    units = STALLED["agent.fc1.0"]
    active_before = comp.weight[units].detach().clone()
    mon.load_state_dict(_force_stagnant(mon, "agent.fc1.0", units))
    before = _out(model, batch)
    summary = knife.apply(model, opt, monitor=mon)
    assert summary.units_changed["agent.fc1.0"] == len(units)
    _assert_same(before, _out(model, batch))
    assert comp.n_frozen == n_rows + 2 * len(units)
    # the trained active part joined the frozen knowledge
    new_k = comp.knife_frozen_weight[n_rows : n_rows + len(units)]
    assert torch.equal(new_k, active_before)
    assert (comp.knife_index == units[0]).sum() == 4


def _force_stagnant(mon, path, units):
    state = mon.state_dict()
    ema = torch.ones_like(state["ema"][path])
    ema[units] = 1e-3
    state["ema"] = {p: (ema if p == path else torch.ones_like(e)) for p, e in state["ema"].items()}
    return state


def test_checkpoint_restore_reproduces_outputs_exactly(warmed, batch):
    model, opt, mon = warmed
    build_intervention("knife").apply(model, opt, monitor=mon)
    train(model, opt, batch, 3, mon)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    expected = _out(model, batch)

    torch.manual_seed(123)
    fresh = QmixNet()
    install_composites(fresh)
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    for x, y in zip(expected, _out(fresh, batch), strict=True):
        assert torch.equal(x, y)

    torch.manual_seed(321)
    fresh2 = QmixNet()
    sd = torch.load(io.BytesIO(buf.getvalue()))
    install_from_state_dict(fresh2, sd)
    fresh2.load_state_dict(sd)
    for x, y in zip(expected, _out(fresh2, batch), strict=True):
        assert torch.equal(x, y)


def test_empty_composites_are_identical_and_load_plain_checkpoints(model, batch):
    plain_sd = copy.deepcopy(model.state_dict())
    before = _out(model, batch)
    paths = install_composites(model)
    assert paths == ["agent.fc1.0", "mixer.hyper_w1.0", "mixer.hyper_w_final.0", "mixer.value.0"]
    for x, y in zip(before, _out(model, batch), strict=True):
        assert torch.equal(x, y)
    model.load_state_dict(plain_sd)  # a checkpoint from before any injection


def test_target_mirrors_online_structure_and_keeps_its_function(warmed, batch):
    model, opt, mon = warmed
    # A target that differs from online: the intervention must not refresh it (a firing
    # method would otherwise enter the next task with a fresher target than `none`).
    target = copy.deepcopy(model)
    with torch.no_grad():
        for p in target.parameters():
            p.mul_(0.5)
    t_out = _out(target, batch)
    summary = build_intervention("knife").apply(model, opt, monitor=mon, target=target)
    assert summary.total_changed > 0
    assert model.state_dict().keys() == target.state_dict().keys()
    types = lambda m: [(n, type(x).__name__) for n, x in m.named_modules()]  # noqa: E731
    assert types(model) == types(target)
    _assert_same(t_out, _out(target, batch))  # same structure, its own function
    train(model, opt, batch, 2, mon)
    target.load_state_dict(model.state_dict())  # a later hard target update just works
    _assert_same(_out(model, batch), _out(target, batch), atol=0)


def test_knife_no_freeze_keeps_count_and_ties_knowledge(warmed, batch):
    model, opt, mon = warmed
    n = trainable_count(model)
    before = _out(model, batch)
    build_intervention("knife_no_freeze", scope="mixer.value").apply(model, opt, monitor=mon)
    _assert_same(before, _out(model, batch))
    assert trainable_count(model) == n
    comp = model.mixer.value[0]
    tied = comp.knife_tied > 0
    assert tied.any()
    idx = comp.knife_index[tied]
    a0 = comp.weight[idx].detach().clone()
    k0 = comp.knife_frozen_weight[tied] + a0
    train(model, opt, batch, 5, mon)
    a1 = comp.weight[idx].detach()
    k1 = comp.knife_frozen_weight[tied] + a1
    assert not torch.equal(k0, k1)  # knowledge is trainable: it moves ...
    torch.testing.assert_close(k1 - k0, a1 - a0)  # ... with the active part


def test_knife_no_compensation_is_plain_reinit(warmed, batch):
    model, opt, mon = warmed
    n = trainable_count(model)
    before = _out(model, batch)
    w = model.agent.fc1[0].weight
    old = w.detach().clone()
    s = build_intervention("knife_no_compensation", scope="agent").apply(model, opt, monitor=mon)
    assert not isinstance(model.agent.fc1[0], CompositeLinear)
    changed = (w.detach() != old).any(1)
    assert changed.sum() == s.units_changed["agent.fc1.0"] >= 16
    assert changed[STALLED["agent.fc1.0"]].all()
    assert not torch.allclose(before[0], _out(model, batch)[0])  # output not preserved
    assert trainable_count(model) == n


def test_knife_random_units_same_count_random_choice(warmed, batch):
    model, opt, mon = warmed
    counts = {p: int(m.sum()) for p, m in mon.candidate_masks().items()}
    before = _out(model, batch)
    s = build_intervention("knife_random_units", seed=0).apply(model, opt, monitor=mon)
    for path, count in s.units_changed.items():
        assert count == counts[path]
    _assert_same(before, _out(model, batch))
    injected = model.agent.fc1[0].knife_index.unique()
    assert not torch.equal(injected.sort().values, STALLED["agent.fc1.0"])


def test_cap_on_fraction_per_layer(warmed):
    model, opt, mon = warmed
    s = build_intervention("knife", max_fraction=0.1).apply(model, opt, monitor=mon)
    assert s.units_changed["agent.fc1.0"] == 6  # int(0.1 * 64)
    assert all(n <= int(0.1 * s.units_total[p]) for p, n in s.units_changed.items())


def test_knife_requires_monitor(model):
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="monitor"):
        build_intervention("knife").apply(model, opt)
