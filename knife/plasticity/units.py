"""Neuron bookkeeping: find the hidden units of any nn.Module by module path.

A *unit layer* is either
- a Linear directly followed by an elementwise activation inside an `nn.Sequential` (or a
  `CompositeLinear` that replaced such a pair), one unit per output feature; or
- an `nn.GRUCell`, one unit per hidden feature, whose incoming weights are rows i, H+i, 2H+i
  of weight_ih / weight_hh (reset, update and new gates) and the matching bias entries.

Structural discovery needs no cooperation from the model beyond building its hidden MLP
layers as Sequentials (pairs outside a Sequential cannot be rewired safely, so they are not
reported). Linear layers without a following activation (output heads, hypernetwork output
layers) are not hidden units.

Paths are dotted module paths relative to the model ("agent.fc1.0", "mixer.hyper_w1.0",
"agent.rnn"). They are *canonical*: an `InjectedModule` wrapper is transparent (its `live`
child is reported at the wrapper's own path and its frozen copies are skipped), so paths and
metric names stay stable across interventions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from knife.plasticity.composite import CompositeLinear
from knife.plasticity.injection import FrozenTerms, InjectedModule

ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
)
# phi(c z) = c phi(z) for c > 0: lets ReBorn scale copied weights without changing outputs.
POSITIVE_HOMOGENEOUS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU, nn.Identity)

Scope = str | Sequence[str] | None


@dataclass(eq=False)
class UnitLayer:
    """One layer of hidden units, found by `find_unit_layers`."""

    path: str
    kind: str  # "linear" | "gru"
    module: nn.Module  # nn.Linear, CompositeLinear or nn.GRUCell
    activation: nn.Module | None = None
    parent: nn.Module | None = None  # the owning Sequential (linear layers)
    index: int | None = None  # position of the Linear in `parent`

    @property
    def network(self) -> str:
        """Top-level network name ("agent", "mixer", ...)."""
        return self.path.split(".", 1)[0]

    @property
    def n_units(self) -> int:
        m = self.module
        return int(m.hidden_size if self.kind == "gru" else m.out_features)

    @property
    def gates(self) -> int:
        """Rows per unit in each incoming weight (3 for a GRUCell)."""
        return 3 if self.kind == "gru" else 1

    def incoming(self) -> list[torch.Tensor]:
        """The live trainable tensors holding the units' incoming weights and biases."""
        m = self.module
        names = (
            ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            if self.kind == "gru"
            else ("weight", "bias")
        )
        return [t for t in (getattr(m, n) for n in names) if t is not None]

    def unit_rows(self, units: torch.Tensor) -> torch.Tensor:
        """Row indices of `units` in each incoming tensor."""
        if self.kind != "gru":
            return units
        h = self.n_units
        return torch.cat([units + g * h for g in range(3)])


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def iter_modules(root: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(canonical path, module) for every live module; see the module docstring."""
    if isinstance(root, FrozenTerms):
        return
    yield prefix, root
    if isinstance(root, InjectedModule):
        yield from iter_modules(root.live, prefix)
        return
    for name, child in root._modules.items():
        if child is not None:
            yield from iter_modules(child, join(prefix, name))


def get_module(model: nn.Module, path: str) -> nn.Module:
    """Resolve a canonical path (wrappers transparent). Raises KeyError if it names nothing."""
    cur = model
    for seg in path.split(".") if path else []:
        if isinstance(cur, InjectedModule) and seg not in cur._modules:
            cur = cur.live
        child = cur._modules.get(seg)
        if child is None:
            raise KeyError(path)
        cur = child
    return cur


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the module at a canonical path (inside a wrapper's `live` if needed)."""
    parent_path, _, name = path.rpartition(".")
    parent = get_module(model, parent_path)
    if isinstance(parent, InjectedModule):
        parent = parent.live
    setattr(parent, name, module)


def find_unit_layers(
    model: nn.Module, scope: Scope = None, *, kinds: Sequence[str] = ("linear", "gru")
) -> list[UnitLayer]:
    """All unit layers of `model` under `scope` (see `resolve_scope`), in module order."""
    layers = _discover(model)
    entries = resolve_scope(model, scope, layers)
    return [ly for ly in layers if ly.kind in kinds and any(in_scope(ly.path, e) for e in entries)]


def in_scope(path: str, entry: str) -> bool:
    return entry == "" or path == entry or path.startswith(entry + ".")


def resolve_scope(
    model: nn.Module, scope: Scope, layers: list[UnitLayer] | None = None
) -> list[str]:
    """Normalize a scope to canonical path prefixes, validating each entry.

    None or "all" -> the model's networks (its direct children: the policies hand the toolkit
    a holder of the algorithm's plasticity networks, e.g. agent and mixer) that hold unit
    layers. A string or list of strings names networks or module paths; each must name a
    module that holds at least one unit layer.
    """
    layers = _discover(model) if layers is None else layers
    if scope is None or scope == "all":
        present = [
            n for n, _ in model.named_children() if any(in_scope(ly.path, n) for ly in layers)
        ]
        if present:
            return present
        if not layers:
            raise ValueError(f"scope: the model has no unit layers; {_choices(layers)}")
        return [""]
    entries = [scope] if isinstance(scope, str) else list(scope)
    if not entries:
        raise ValueError(f"scope: empty; {_choices(layers)}")
    for e in entries:
        if not isinstance(e, str) or not any(in_scope(ly.path, e) for ly in layers):
            raise ValueError(f"scope {e!r} names no unit layer; {_choices(layers)}")
    return entries


def scope_modules(model: nn.Module, scope: Scope) -> list[str]:
    """Validate a scope naming whole modules (network-level methods): each must have
    parameters. None or "all": the model's networks (direct children) that have parameters."""
    if scope is None or scope == "all":
        entries = [n for n, _ in model.named_children() if _has_params(model, n)]
        if not entries:
            raise ValueError(f"scope: no network has parameters; {_module_choices(model)}")
        return entries
    entries = [scope] if isinstance(scope, str) else list(scope)
    if not entries:
        raise ValueError(f"scope: empty; {_module_choices(model)}")
    for e in entries:
        if not isinstance(e, str) or not _has_params(model, e):
            raise ValueError(
                f"scope {e!r} names no module with parameters; {_module_choices(model)}"
            )
    return entries


def find_consumer(
    model: nn.Module, layer: UnitLayer, overrides: Mapping[str, str] | None = None
) -> tuple[str, nn.Module] | None:
    """The module that reads `layer`'s units as its input features, or None if unknown.

    Structural rule: the next parameterized module after the activation in the owning
    Sequential; if the pair ends the Sequential, the first parameterized module of the
    Sequential's next sibling in its parent (registration order), e.g. agent.fc1 -> agent.rnn;
    for a GRUCell, its own next sibling (agent.rnn -> agent.fc2; the recurrence is not listed).
    Only Linear, CompositeLinear and GRUCell consumers with matching input size are accepted.
    `overrides` maps a layer path to its consumer path for models where this guess is wrong.
    """
    if overrides and layer.path in overrides:
        cpath = overrides[layer.path]
        return cpath, get_module(model, cpath)
    if layer.parent is not None and layer.index is not None:
        seq_path = layer.path.rpartition(".")[0]
        children = list(layer.parent._modules.items())
        for name, child in children[layer.index + 1 :]:
            hit = _first_param_module(child, join(seq_path, name))
            if hit is not None:
                return hit if _reads(hit[1], layer.n_units) else None
        path = seq_path
    else:  # a GRUCell: its next sibling (agent.rnn -> agent.fc2)
        path = layer.path
    # climb through enclosing Sequentials, then look at the next sibling once
    while path:
        parent_path, _, name = path.rpartition(".")
        parent = get_module(model, parent_path)
        if isinstance(parent, InjectedModule):
            parent = parent.live
        names = list(parent._modules)
        for sib in names[names.index(name) + 1 :]:
            child = parent._modules[sib]
            if child is None:
                continue
            hit = _first_param_module(child, join(parent_path, sib))
            if hit is not None:
                return hit if _reads(hit[1], layer.n_units) else None
        if not isinstance(parent, nn.Sequential):
            return None
        path = parent_path
    return None


def consumer_columns(module: nn.Module) -> list[torch.Tensor]:
    """Tensors whose columns index the producer's units (all must change together)."""
    if isinstance(module, CompositeLinear):
        return [module.weight, module.knife_frozen_weight]
    if isinstance(module, nn.GRUCell):
        return [module.weight_ih]
    return [module.weight]


def fraction_metrics(prefix: str, masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Flat metrics: fraction of True per layer, per network and overall, with one sync."""
    if not masks:
        return {}
    paths = list(masks)
    counts = torch.stack([masks[p].sum() for p in paths]).float().cpu().tolist()
    sizes = [masks[p].numel() for p in paths]
    out: dict[str, float] = {}
    per_net: dict[str, list[float]] = {}
    for p, c, n in zip(paths, counts, sizes, strict=True):
        out[f"{prefix}/{p}"] = c / max(n, 1)
        acc = per_net.setdefault(p.split(".", 1)[0], [0.0, 0.0])
        acc[0] += c
        acc[1] += n
    for net, (c, n) in per_net.items():
        if f"{prefix}/{net}" not in out:
            out[f"{prefix}/{net}"] = c / max(n, 1)
    out[f"{prefix}/all"] = sum(counts) / max(sum(sizes), 1)
    return out


# --------------------------------------------------------------------- internals


def _discover(model: nn.Module) -> list[UnitLayer]:
    layers: list[UnitLayer] = []
    for path, m in iter_modules(model):
        if isinstance(m, nn.GRUCell):
            layers.append(UnitLayer(path, "gru", m))
        elif isinstance(m, nn.Sequential):
            items = list(m._modules.items())
            for k, (name, child) in enumerate(items):
                if isinstance(child, CompositeLinear):
                    layers.append(
                        UnitLayer(join(path, name), "linear", child, child.activation, m, k)
                    )
                elif (
                    isinstance(child, nn.Linear)
                    and k + 1 < len(items)
                    and isinstance(items[k + 1][1], ELEMENTWISE_ACTIVATIONS)
                ):
                    layers.append(
                        UnitLayer(join(path, name), "linear", child, items[k + 1][1], m, k)
                    )
    return layers


def _first_param_module(root: nn.Module, prefix: str) -> tuple[str, nn.Module] | None:
    for path, m in iter_modules(root, prefix):
        if isinstance(m, CompositeLinear | nn.Linear | nn.GRUCell):
            return path, m
        if any(p is not None for p in m._parameters.values()):
            return path, m
    return None


def _reads(module: nn.Module, n: int) -> bool:
    if isinstance(module, nn.GRUCell):
        return module.input_size == n
    if isinstance(module, nn.Linear | CompositeLinear):
        return module.in_features == n
    return False


def _has_params(model: nn.Module, path: str) -> bool:
    try:
        mod = get_module(model, path)
    except KeyError:
        return False
    return any(p.requires_grad for p in mod.parameters())


def _choices(layers: list[UnitLayer]) -> str:
    nets = sorted({ly.network for ly in layers})
    return f"valid choices: networks {nets}, layers {[ly.path for ly in layers]}"


def _module_choices(model: nn.Module) -> str:
    names = [p for p, m in iter_modules(model) if p and any(True for _ in m.parameters())]
    return f"valid choices: {names}"
