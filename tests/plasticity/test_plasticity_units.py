"""Neuron bookkeeping: unit layers of any nn.Module, by path, incl. the QMIX networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from knife.plasticity import find_consumer, find_unit_layers, get_module, resolve_scope


def test_finds_qmix_agent_and_mixer_units(model):
    layers = {ly.path: ly for ly in find_unit_layers(model)}
    assert list(layers) == [
        "agent.fc1.0",
        "agent.rnn",
        "mixer.hyper_w1.0",
        "mixer.hyper_w_final.0",
        "mixer.value.0",
    ]
    assert layers["agent.rnn"].kind == "gru" and layers["agent.rnn"].n_units == 64
    assert layers["agent.fc1.0"].activation.__class__ is nn.ReLU
    assert layers["mixer.value.0"].n_units == 32
    assert {ly.network for ly in layers.values()} == {"agent", "mixer"}
    # output layers (fc2, hypernetwork outputs, hyper_b1) are not hidden units
    assert not any(p.endswith((".fc2", ".2", "hyper_b1")) for p in layers)


def test_gru_unit_rows_cover_three_gates(model):
    gru = next(ly for ly in find_unit_layers(model) if ly.kind == "gru")
    rows = gru.unit_rows(torch.tensor([3]))
    assert rows.tolist() == [3, 67, 131]
    assert [tuple(t.shape) for t in gru.incoming()] == [(192, 64), (192, 64), (192,), (192,)]


def test_any_module_nested_sequentials():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(5, 7),
                nn.Tanh(),
                nn.Sequential(nn.Linear(7, 9), nn.ELU()),
                nn.Linear(9, 2),
            )
            self.cell = nn.GRUCell(2, 4)
            self.head = nn.Linear(4, 1)

        def forward(self, x, h):
            return self.head(self.cell(self.body(x), h))

    net = Net()
    paths = [ly.path for ly in find_unit_layers(net)]
    assert paths == ["body.0", "body.2.0", "cell"]
    layers = {ly.path: ly for ly in find_unit_layers(net)}
    # consumers: next Linear in the Sequential, climbing out of the inner Sequential
    assert find_consumer(net, layers["body.0"])[0] == "body.2.0"
    assert find_consumer(net, layers["body.2.0"])[0] == "body.3"


def test_scope_selection_and_errors(model):
    assert [ly.path for ly in find_unit_layers(model, "agent")] == ["agent.fc1.0", "agent.rnn"]
    assert [ly.path for ly in find_unit_layers(model, ["mixer.value"])] == ["mixer.value.0"]
    assert resolve_scope(model, None) == ["agent", "mixer"]
    with pytest.raises(ValueError, match="valid choices.*agent.fc1.0"):
        find_unit_layers(model, "mixer.nonexistent")
    with pytest.raises(ValueError, match="names no unit layer"):
        find_unit_layers(model, "agent.fc2")
    assert get_module(model, "agent.fc1.0") is model.agent.fc1[0]
