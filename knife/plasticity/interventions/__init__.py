"""Interventions behind one interface: build_intervention(name, **options).apply(...)."""

from __future__ import annotations

import inspect
from typing import Any

from .base import EVENTS, Intervention, InterventionSummary
from .baselines import (
    NoIntervention,
    RedoIntervention,
    ReGramaIntervention,
    ResetIntervention,
    ShrinkPerturbIntervention,
)
from .knife import KnifeIntervention
from .network_injection import PlasticityInjectionIntervention
from .reborn import RebornIntervention

# name -> (class, options the name fixes)
_REGISTRY: dict[str, tuple[type[Intervention], dict[str, Any]]] = {
    "none": (NoIntervention, {}),
    "reset": (ResetIntervention, {}),
    "redo": (RedoIntervention, {}),
    "regrama": (ReGramaIntervention, {}),
    "shrink_perturb": (ShrinkPerturbIntervention, {}),
    "plasticity_injection": (PlasticityInjectionIntervention, {}),
    "reborn": (RebornIntervention, {}),
    "knife": (KnifeIntervention, {}),
    "knife_no_freeze": (KnifeIntervention, {"freeze": False}),
    "knife_no_compensation": (KnifeIntervention, {"compensation": False}),
    "knife_random_units": (KnifeIntervention, {"units": "random"}),
}

INTERVENTIONS: tuple[str, ...] = tuple(_REGISTRY)
# KNIFE with one design choice of DESIGN 7 changed: the names that fix options on KNIFE.
KNIFE_ABLATIONS: tuple[str, ...] = tuple(
    name for name, (cls, fixed) in _REGISTRY.items() if cls is KnifeIntervention and fixed
)


def intervention_options(name: str) -> list[str]:
    """Option names `build_intervention(name, ...)` accepts."""
    cls, fixed = _lookup(name)
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in names and p.name not in fixed:
                names.append(p.name)
    return names


def build_intervention(name: str, **options: Any) -> Intervention:
    """Build an intervention by name; ValueError lists valid names / options on bad input."""
    cls, fixed = _lookup(name)
    valid = intervention_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; valid options: {valid}")
    obj = cls(**fixed, **options)
    obj.method = name
    return obj


def _lookup(name: str) -> tuple[type[Intervention], dict[str, Any]]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown intervention {name!r}; valid choices: {list(_REGISTRY)}")
    return _REGISTRY[name]


__all__ = [
    "EVENTS",
    "INTERVENTIONS",
    "Intervention",
    "InterventionSummary",
    "KnifeIntervention",
    "NoIntervention",
    "PlasticityInjectionIntervention",
    "RebornIntervention",
    "RedoIntervention",
    "ReGramaIntervention",
    "ResetIntervention",
    "ShrinkPerturbIntervention",
    "build_intervention",
    "intervention_options",
]
