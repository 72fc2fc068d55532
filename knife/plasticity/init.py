"""Fresh initial values drawn with each layer's own init scheme, and in-place re-init.

"Own init scheme" = the module class's `reset_parameters` (nn.Linear's Kaiming-uniform for
Linear and composite layers, uniform(+-1/sqrt(H)) for GRUCell, ...). Values are always
written in place into the existing tensors, never by replacing Parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from knife.plasticity.composite import CompositeLinear
from knife.plasticity.injection import InjectedModule
from knife.plasticity.units import iter_modules


def fresh_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """Freshly initialized values for `module`'s own (non-recursive) parameters, by name."""
    if isinstance(module, nn.Linear | CompositeLinear):
        w = module.weight
        tmp = nn.Linear(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        return {n: p.detach() for n, p in tmp.named_parameters()}
    own = {n: p for n, p in module._parameters.items() if p is not None}
    if not own or not hasattr(module, "reset_parameters"):
        return {}
    clone = copy.deepcopy(module)
    with torch.no_grad():
        clone.reset_parameters()
    return {n: clone._parameters[n].detach() for n in own}


def param_leaves(root: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Live modules (canonical path) that own trainable parameters directly."""
    seen: set[int] = set()
    out = []
    for path, m in iter_modules(root, prefix):
        if id(m) in seen:
            continue
        seen.add(id(m))
        if any(p is not None and p.requires_grad for p in m._parameters.values()):
            out.append((path, m))
    return out


@torch.no_grad()
def reinit_module_(
    root: nn.Module, prefix: str = "", keep: Callable[[str], bool] | None = None
) -> tuple[dict[str, int], list[str]]:
    """Re-initialize every live parameter under `root` in place; drop composite/injection extras.

    `keep(path)` True leaves that module as it is. Returns (units changed per leaf path,
    notes about leaves that could not be re-initialized).
    """
    keep = keep or (lambda path: False)
    changed: dict[str, int] = {}
    notes: list[str] = []
    for path, m in iter_modules(root, prefix):
        if isinstance(m, CompositeLinear | InjectedModule) and not keep(path):
            m.clear_frozen()
    for path, m in param_leaves(root, prefix):
        if keep(path):
            continue
        fresh = fresh_parameters(m)
        if not fresh:
            notes.append(f"{path}: no reset_parameters, left unchanged")
            continue
        for name, value in fresh.items():
            m._parameters[name].copy_(value)
        changed[path] = leaf_units(m)
    return changed, notes


def fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` re-initialized with its layers' own schemes (`reinit_module_`:
    composite and injection extras dropped), drawn from `seed` in a private RNG stream, so
    building it neither moves the run's RNG nor depends on it (CPU and the model's CUDA
    devices are forked)."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        fresh = copy.deepcopy(model)
        reinit_module_(fresh)
    for p in fresh.parameters():
        p.grad = None
    return fresh


def leaf_units(m: nn.Module) -> int:
    """Number of units (output rows) of a parameter leaf, for summaries."""
    if isinstance(m, nn.GRUCell | nn.RNNCellBase):
        return int(m.hidden_size)
    if hasattr(m, "out_features"):
        return int(m.out_features)
    p = next(p for p in m._parameters.values() if p is not None)
    return int(p.shape[0]) if p.dim() else 1
