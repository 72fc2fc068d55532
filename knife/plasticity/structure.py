"""Installing composites / injection wrappers, and mirroring structure for targets and restores.

Replacing a (Linear, activation) pair puts the `CompositeLinear` at the Linear's index of the
owning Sequential and an `nn.Identity` at the activation's index, so the owning network's
forward still works unchanged. State-dict keys of the live part stay the same
("agent.fc1.0.weight"); the composite adds `knife_*` buffers.

Restoring a checkpoint into a freshly built model:
    fresh = build(); install_composites(fresh, scope); fresh.load_state_dict(sd)
or, for any mix of composites and plasticity-injection wrappers:
    fresh = build(); install_from_state_dict(fresh, sd); fresh.load_state_dict(sd)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from knife.plasticity.composite import CompositeLinear
from knife.plasticity.injection import InjectedModule, frozen_copy
from knife.plasticity.units import (
    ELEMENTWISE_ACTIVATIONS,
    Scope,
    UnitLayer,
    find_unit_layers,
    get_module,
    set_module,
)

_COMPOSITE_KEY = ".knife_sign"
_INJECTION_KEY = ".injection_signs"


def ensure_composite(layer: UnitLayer) -> CompositeLinear:
    """The layer's CompositeLinear, installing an empty one in place if needed."""
    if isinstance(layer.module, CompositeLinear):
        return layer.module
    if layer.kind != "linear" or layer.parent is None or layer.index is None:
        raise ValueError(
            f"{layer.path}: only Linear + activation pairs in a Sequential get composites"
        )
    comp = CompositeLinear(layer.module, layer.activation)
    layer.parent[layer.index] = comp
    layer.parent[layer.index + 1] = nn.Identity()
    layer.module = comp
    return comp


def install_composites(model: nn.Module, scope: Scope = None) -> list[str]:
    """Wrap every Linear + activation pair in scope in an (empty) composite.

    An empty composite computes exactly the original pair. Returns the paths of all composite
    layers in scope (new and existing).
    """
    paths = []
    for layer in find_unit_layers(model, scope, kinds=("linear",)):
        ensure_composite(layer)
        paths.append(layer.path)
    return paths


def ensure_injected(model: nn.Module, path: str) -> InjectedModule:
    """The InjectedModule at a canonical path, wrapping the module there if needed."""
    mod = get_module(model, path)
    if isinstance(mod, InjectedModule):
        return mod
    wrapper = InjectedModule(mod)
    if path:
        set_module(model, path, wrapper)
    else:
        raise ValueError("plasticity injection cannot wrap the root module itself")
    return wrapper


@torch.no_grad()
def install_from_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Give `model` the composites and injection wrappers that `state_dict` was saved with.

    Paths in the state dict are raw module paths (with `live`/`frozen` segments). Wrappers are
    installed outermost first, each with as many frozen terms as saved, then composites.
    Returns the raw paths that were installed or resized. Values are not loaded.
    """
    done: list[str] = []
    # Networks that own their injection structure resize themselves (`resize_for_state_dict`).
    for raw, mod in list(model.named_modules()):
        resize = getattr(mod, "resize_for_state_dict", None)
        if callable(resize) and resize(state_dict, f"{raw}." if raw else ""):
            done.append(raw)
    wrappers = sorted(
        (k[: -len(_INJECTION_KEY)] for k in state_dict if k.endswith(_INJECTION_KEY)),
        key=lambda p: p.count("."),
    )
    for raw in wrappers:
        mod = _raw_get(model, raw)
        if not isinstance(mod, InjectedModule):
            mod = InjectedModule(mod)
            _raw_set(model, raw, mod)
        n = int(state_dict[raw + _INJECTION_KEY].shape[0])
        while len(mod.frozen) < n:
            mod.add_frozen(frozen_copy(mod.live), 0.0)
        while len(mod.frozen) > n:
            del mod.frozen[len(mod.frozen) - 1]
        done.append(raw)
    for raw in (k[: -len(_COMPOSITE_KEY)] for k in state_dict if k.endswith(_COMPOSITE_KEY)):
        mod = _raw_get(model, raw)
        if isinstance(mod, CompositeLinear):
            continue
        parent_path, _, name = raw.rpartition(".")
        parent = _raw_get(model, parent_path)
        names = list(parent._modules)
        k = names.index(name)
        nxt = parent._modules[names[k + 1]] if k + 1 < len(names) else None
        if not (
            isinstance(parent, nn.Sequential)
            and isinstance(mod, nn.Linear)
            and isinstance(nxt, ELEMENTWISE_ACTIVATIONS)
        ):
            raise ValueError(
                f"checkpoint has a composite at {raw!r} but the model has no "
                "Linear + activation pair there"
            )
        parent[k] = CompositeLinear(mod, nxt)
        parent[k + 1] = nn.Identity()
        done.append(raw)
    return done


def mirror_structure(source: nn.Module, target: nn.Module) -> list[str]:
    """Give `target` (e.g. the target networks) the composites and wrappers of `source`."""
    return install_from_state_dict(target, source.state_dict())


def _raw_get(model: nn.Module, raw: str) -> nn.Module:
    try:
        return model.get_submodule(raw) if raw else model
    except AttributeError:
        raise ValueError(
            f"state dict names module {raw!r}, which this model does not have"
        ) from None


def _raw_set(model: nn.Module, raw: str, module: nn.Module) -> None:
    parent_path, _, name = raw.rpartition(".")
    setattr(_raw_get(model, parent_path), name, module)
