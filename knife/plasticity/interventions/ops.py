"""Unit-level building blocks shared by the interventions (all in place, optimizer-aware)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from knife.plasticity.composite import CompositeLinear
from knife.plasticity.init import fresh_parameters
from knife.plasticity.optim_state import reset_optimizer_state
from knife.plasticity.units import UnitLayer, consumer_columns, find_consumer


@torch.no_grad()
def reinit_incoming(
    layer: UnitLayer, units: torch.Tensor, optimizer: torch.optim.Optimizer | None
) -> None:
    """Plain re-init of `units`' incoming weights and biases with the layer's own init.

    Extra composite rows of those units are dropped: a plainly re-initialized unit starts over.
    """
    fresh = fresh_parameters(layer.module)
    rows = layer.unit_rows(units)
    names = (
        ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        if layer.kind == "gru"
        else ("weight", "bias")
    )
    for name in names:
        p = getattr(layer.module, name)
        if p is None:
            continue
        p[rows] = fresh[name][rows].to(p)
        reset_optimizer_state(optimizer, p, rows=rows)
    if isinstance(layer.module, CompositeLinear):
        layer.module.drop_units(units)


def outgoing(
    model: nn.Module, layer: UnitLayer, consumers: Mapping[str, str] | None
) -> nn.Module | None:
    hit = find_consumer(model, layer, consumers)
    return None if hit is None else hit[1]


@torch.no_grad()
def zero_outgoing(
    consumer: nn.Module, units: torch.Tensor, optimizer: torch.optim.Optimizer | None
) -> None:
    """Zero the consumer's columns reading `units` (live and frozen), reset their moments."""
    for t in consumer_columns(consumer):
        if t.shape[0]:
            t[:, units] = 0
    reset_optimizer_state(optimizer, live_columns(consumer), cols=units)


def live_columns(consumer: nn.Module) -> torch.Tensor:
    return consumer.weight_ih if isinstance(consumer, nn.GRUCell) else consumer.weight


def linear_only(layers: list[UnitLayer], summary_notes: list[str], method: str) -> list[UnitLayer]:
    """Unit-level methods act on Linear + activation layers; GRU layers are noted and skipped."""
    for ly in layers:
        if ly.kind == "gru":
            summary_notes.append(f"{ly.path}: GRU units are measured but not changed by {method}")
    return [ly for ly in layers if ly.kind == "linear"]
