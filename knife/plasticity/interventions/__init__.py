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
# One line per option (`knife config`); "<method>.<option>" overrides where a name means
# something else for that method. Sources and defaults: each method's own module.
OPTION_DOCS: dict[str, str] = {
    "on_task_switch": "fire at every task switch",
    "every_n_updates": "also fire every n learner updates (null: never)",
    "scope": "networks or module paths it acts on (null: the algorithm's plasticity networks)",
    "max_fraction": "cap on the fraction of a layer's units changed per firing (null: none)",
    "reset_optimizer": "zero the optimizer state of what it re-initializes",
    "zero_outgoing": "zero the outgoing weights of reset units (null: the method's own rule)",
    "consumers": "layer path -> the layer that reads its units, where the structure is ambiguous",
    "seed": "seed of the method's own random draws (null: the trial's)",
    "tau": "the method's own threshold on its unit score",
    "redo.tau": "dormant threshold on the normalized activation score (Sokar et al. 2023)",
    "regrama.tau": "threshold on the normalized gradient score (GraMa, Liu et al. 2025)",
    "reborn.tau": "dormant threshold of ReBorn's normalized activation score (Qin et al. 2024)",
    "knife.tau": "stagnation threshold (null: plasticity.monitor.tau)",
    "beta": "over-active threshold on the normalized activation score",
    "alpha_range": "range of the random share each dormant unit gets from its over-active one",
    "max_per_over_active": "dormant units one over-active unit may give weight to",
    "keep": "module paths left as they are (the encoder kept, as Nikishin et al. 2022)",
    "shrink": "weights are multiplied by this (Ash & Adams 2020)",
    "perturb": "scale of the fresh-init noise added after the shrink",
    "units": "stagnant: the monitor's stagnant units; random: as many units drawn at random",
    "freeze": "freeze the knowledge and compensation neurons",
    "compensation": "add the compensation neuron that keeps the output at injection",
}
# KNIFE with one design choice of DESIGN 7 changed: the names that fix options on KNIFE.
KNIFE_ABLATIONS: tuple[str, ...] = tuple(
    name for name, (cls, fixed) in _REGISTRY.items() if cls is KnifeIntervention and fixed
)


def intervention_options(name: str) -> list[str]:
    """Option names `build_intervention(name, ...)` accepts."""
    return list(option_defaults(name))


def option_defaults(name: str) -> dict[str, Any]:
    """Option -> its default for `build_intervention(name, ...)` (the most derived class's
    default wins; a class attribute `default_scope` stands in for scope=None)."""
    cls, fixed = _lookup(name)
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in out and p.name not in fixed:
                out[p.name] = p.default
    if out.get("scope") is None and getattr(cls, "default_scope", None) is not None:
        out["scope"] = cls.default_scope
    return out


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
    "OPTION_DOCS",
    "PlasticityInjectionIntervention",
    "RebornIntervention",
    "RedoIntervention",
    "ReGramaIntervention",
    "ResetIntervention",
    "ShrinkPerturbIntervention",
    "build_intervention",
    "intervention_options",
    "option_defaults",
]
