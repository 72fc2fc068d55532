"""`plasticity_injection` (Nikishin et al. 2023) at network level, DESIGN 8."""

from __future__ import annotations

import torch
from torch import nn

from knife.plasticity.init import reinit_module_
from knife.plasticity.injection import InjectedModule, frozen_copy
from knife.plasticity.optim_state import reset_optimizer_params
from knife.plasticity.structure import ensure_injected
from knife.plasticity.units import get_module, in_scope, iter_modules, scope_modules

from .base import Intervention

_ALLOWED = frozenset({"forward", "reset_parameters", "extra_repr"})


class PlasticityInjectionIntervention(Intervention):
    """The chosen network becomes frozen_old(x) + new(x) - frozen_copy_of_new(x).

    The live module keeps its Parameter objects (those the optimizer holds): their values are
    copied into a frozen term first, then they are re-initialized in place and become `new`;
    a frozen copy of the fresh values is the compensation term. Optimizer state of the live
    parameters is fully reset.

    A network with its own `inject_head()` (the recurrent QMIX agent: Nikishin et al.'s new
    GRU + Q head next to the frozen old head, on the trained encoder fc1) injects itself.
    Other scope entries name modules to wrap. A network that declares `injection_points()` (child
    paths) is injected there: the QMIX mixer names its hypernetworks, so the new terms sit
    before abs() and Q_tot stays monotone in every Q_i (wrapping the whole mixer would not
    be). Otherwise a module with methods besides forward (e.g. the RNN agent with `unroll`)
    cannot be wrapped transparently, so its output head - its last Linear, agent.fc2 for the
    QMIX agent - is wrapped instead. Default scope: every network it is given (QMIX: agent
    and mixer). Repeated injection
    appends two more frozen terms.
    """

    name = "plasticity_injection"

    @torch.no_grad()
    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        changed_paths = []
        paths = []
        for entry in scope_modules(model, self.scope):
            mod = get_module(model, entry)
            inject_head = getattr(mod, "inject_head", None)
            if callable(inject_head) and not isinstance(mod, InjectedModule):
                # The network injects its own head (the recurrent agent: a new GRU + Q head
                # next to the frozen old one, on its trained encoder).
                for child, units in inject_head().items():
                    path = f"{entry}.{child}"
                    live = get_module(model, path)
                    reset_optimizer_params(
                        optimizer, (p for p in live.parameters() if p.requires_grad)
                    )
                    summary.units_changed[path] = summary.units_total[path] = units
                    changed_paths.append(path)
                summary.notes.append(
                    f"{entry}: a new head next to the frozen old one (its own inject_head)"
                )
                continue
            paths.extend(_paths(model, entry, summary))
        for path in paths:
            wrapper = ensure_injected(model, path)
            wrapper.add_frozen(frozen_copy(wrapper.live), 1.0)
            changed, notes = reinit_module_(wrapper.live, path)
            wrapper.add_frozen(frozen_copy(wrapper.live), -1.0)
            reset_optimizer_params(
                optimizer, (p for p in wrapper.live.parameters() if p.requires_grad)
            )
            summary.units_changed.update(changed)
            summary.units_total.update(changed)
            summary.notes.extend(notes)
            changed_paths.append(path)
        if monitor is not None:
            monitor.reset_units(
                {
                    ly.path: torch.arange(ly.n_units)
                    for ly in monitor.layers
                    if any(in_scope(ly.path, p) for p in changed_paths)
                }
            )


def _paths(model: nn.Module, entry: str, summary) -> list[str]:
    """The module paths to wrap for one scope entry (class docstring)."""
    mod = get_module(model, entry)
    if isinstance(mod, InjectedModule):
        return [entry]
    points = getattr(mod, "injection_points", None)
    if callable(points):
        paths = [f"{entry}.{p}" for p in points()]
        summary.notes.append(
            f"{entry}: injected at its declared points {paths}"
            if paths
            else f"{entry}: declares no injection points (no parameters), left alone"
        )
        return paths
    if _transparent(mod):
        return [entry]
    heads = [p for p, m in iter_modules(mod, entry) if isinstance(m, nn.Linear)]
    if not heads:
        raise ValueError(
            f"plasticity_injection: {entry!r} has methods besides forward "
            "and no Linear head to wrap"
        )
    summary.notes.append(f"{entry}: has methods besides forward, injected at its head {heads[-1]}")
    return [heads[-1]]


def _transparent(mod: nn.Module) -> bool:
    """True if wrapping `mod` cannot bypass the wrapper: no public methods besides forward."""
    for klass in type(mod).__mro__:
        if klass.__module__.startswith("torch.") or klass is object:
            continue
        for name, value in vars(klass).items():
            if callable(value) and not name.startswith("_") and name not in _ALLOWED:
                return False
    return True
