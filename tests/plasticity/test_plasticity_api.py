"""One interface for all interventions: names, options, triggers, summaries, bad input."""

from __future__ import annotations

import pytest
import torch

from knife.plasticity import (
    INTERVENTIONS,
    StagnationMonitor,
    build_intervention,
    intervention_options,
)

ALL = [
    "none", "reset", "redo", "regrama", "shrink_perturb", "plasticity_injection", "reborn",
    "knife", "knife_no_freeze", "knife_no_compensation", "knife_random_units",
]  # fmt: skip


def test_registry_has_every_method():
    assert list(INTERVENTIONS) == ALL
    for name in ALL:
        opts = intervention_options(name)
        assert {"on_task_switch", "every_n_updates", "scope", "max_fraction"} <= set(opts)
        obj = build_intervention(name)
        assert obj.method == name


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="unknown intervention 'knive'.*'knife_random_units'"):
        build_intervention("knive")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match="valid options: .*shrink"):
        build_intervention("shrink_perturb", shrinkage=0.5)
    with pytest.raises(ValueError, match="unknown option"):
        build_intervention("knife_no_freeze", freeze=True)  # fixed by the name


@pytest.mark.parametrize("name", ["knife", "redo", "regrama", "reborn"])
@pytest.mark.parametrize("tau", [0.0, 1.01, -1])
def test_tau_outside_unit_interval(name, tau):
    with pytest.raises(ValueError, match=r"tau must be in \(0, 1\]"):
        build_intervention(name, tau=tau)


@pytest.mark.parametrize("name", ALL[1:])
def test_scope_naming_no_layer_is_a_clear_error(model, batch, name):
    opt = torch.optim.Adam(model.parameters())
    mon = StagnationMonitor(model)
    obj = build_intervention(name, scope="agent.nothing_here")
    with pytest.raises(ValueError, match="valid choices"):
        obj.apply(model, opt, monitor=mon, batch=batch)


def test_triggers():
    k = build_intervention("knife", every_n_updates=100)
    assert k.should_fire("task_switch", 7)
    assert k.should_fire("update", 200) and not k.should_fire("update", 150)
    assert not k.should_fire("update", 0)
    k2 = build_intervention("redo", on_task_switch=False)
    assert not k2.should_fire("task_switch", 0) and not k2.should_fire("update", 100)
    with pytest.raises(ValueError, match="'task_switch', 'update'"):
        k.should_fire("episode", 1)
    with pytest.raises(ValueError, match="every_n_updates"):
        build_intervention("knife", every_n_updates=0)
    with pytest.raises(ValueError, match="max_fraction"):
        build_intervention("knife", max_fraction=1.5)
    with pytest.raises(ValueError, match="unknown option.*target_sync"):
        build_intervention("knife", target_sync="copy")  # targets: the switch protocol's


def test_summary_metrics(model, batch):
    with torch.no_grad():
        model.agent.fc1[0].bias[:3] = -1e4
    s = build_intervention("redo").apply(model, None, batch=batch)
    m = s.to_metrics()
    assert m["intervention/units_changed/agent.fc1.0"] == 3.0
    assert m["intervention/units_changed/total"] == float(s.total_changed)


def test_missing_batch_is_a_clear_error(model):
    with pytest.raises(ValueError, match="batch"):
        build_intervention("redo").apply(model, None)
