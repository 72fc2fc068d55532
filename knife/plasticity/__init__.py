"""Plasticity toolkit, pure PyTorch (no Ray): neuron bookkeeping, stagnation and other
metrics, KNIFE and the baseline interventions (DESIGN 6-8). Works on any nn.Module."""

from knife.plasticity.composite import CompositeLinear
from knife.plasticity.injection import FrozenTerms, InjectedModule, frozen_copy
from knife.plasticity.interventions import (
    INTERVENTIONS,
    Intervention,
    InterventionSummary,
    KnifeIntervention,
    build_intervention,
    intervention_options,
)
from knife.plasticity.metrics import (
    activation_scores,
    capture_features,
    dormant_fraction,
    dormant_masks,
    effective_rank,
    feature_norm,
    gradient_norm,
    grama_fraction,
    grama_scores,
    mean_abs_activations,
    plasticity_metrics,
    run_batch,
    weight_norm,
)
from knife.plasticity.monitor import StagnationMonitor
from knife.plasticity.optim_state import reset_optimizer_params, reset_optimizer_state
from knife.plasticity.structure import (
    install_composites,
    install_from_state_dict,
    mirror_structure,
)
from knife.plasticity.units import (
    UnitLayer,
    find_consumer,
    find_unit_layers,
    get_module,
    iter_modules,
    resolve_scope,
)

__all__ = [
    "INTERVENTIONS",
    "CompositeLinear",
    "FrozenTerms",
    "InjectedModule",
    "Intervention",
    "InterventionSummary",
    "KnifeIntervention",
    "StagnationMonitor",
    "UnitLayer",
    "activation_scores",
    "build_intervention",
    "capture_features",
    "dormant_fraction",
    "dormant_masks",
    "effective_rank",
    "feature_norm",
    "find_consumer",
    "find_unit_layers",
    "frozen_copy",
    "get_module",
    "gradient_norm",
    "grama_fraction",
    "grama_scores",
    "install_composites",
    "install_from_state_dict",
    "intervention_options",
    "iter_modules",
    "mean_abs_activations",
    "mirror_structure",
    "plasticity_metrics",
    "reset_optimizer_params",
    "reset_optimizer_state",
    "resolve_scope",
    "run_batch",
    "weight_norm",
]
