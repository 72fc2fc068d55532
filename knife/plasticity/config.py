"""The plasticity section of a run's config: the stagnation monitor + one intervention.

Namespaced so that no key can mean two things (a flat `tau` used to reach the monitor and
never ReDo's own threshold):

    plasticity:
      method: knife                      # the intervention this trial runs (INTERVENTIONS)
      monitor: {tau: 0.25, beta: 0.99, signal: grad, metrics_interval: 20}
      probe: {at_switch: true, every: 0, steps: 100, lr: 0.001, batch: 4}  # knife.plasticity.probe
      options:                           # per method; only the running method's block is used,
        knife: {max_fraction: 0.25}      # so one sweep base can configure every method of a grid
        redo: {tau: 0.1, every_n_updates: 1000}

`PlasticityConfig.from_mapping` parses and validates it without building a model, so bad
input stops before Ray starts; errors name the key and the allowed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from knife.fields import ge0, ge1, gt0, spec, unit_half_open, unit_open_right, validate_fields
from knife.plasticity.interventions import (
    INTERVENTIONS,
    build_intervention,
    intervention_options,
    option_defaults,
)

SECTION_KEYS = ("method", "monitor", "options", "probe")
SIGNALS = ("grad", "update")


@dataclass(frozen=True)
class MonitorConfig:
    """The stagnation monitor (knife.plasticity.monitor) and how often it reports."""

    tau: float = spec(
        0.25,
        float,
        "a unit is stagnant when its normalized score is below tau",
        check=unit_half_open,
        allowed="a number in (0, 1]",
    )
    beta: float = spec(
        0.99,
        float,
        "EMA decay of the per-unit update ratios",
        check=unit_open_right,
        allowed="a number in [0, 1)",
    )
    signal: str = spec(
        "grad",
        str,
        "grad: ||g_i|| / ||W_i||; update: the optimizer's step instead",
        choices=SIGNALS,
    )
    metrics_interval: int = spec(
        20,
        int,
        "learner updates between plasticity metric reports",
        check=ge1,
        allowed="an integer >= 1 (learner updates)",
    )
    # One extra forward + backward per report (knife.plasticity.fresh_reference).
    fresh_reference: bool = spec(
        True, bool, "score a fresh copy of the networks on the same batches at each report"
    )

    def __post_init__(self) -> None:
        validate_fields(self, "plasticity.monitor")

    def monitor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of StagnationMonitor."""
        return {"tau": float(self.tau), "beta": float(self.beta), "signal": self.signal}


MONITOR_KEYS = tuple(f.name for f in fields(MonitorConfig))


@dataclass(frozen=True)
class ProbeConfig:
    """The trainability probe (knife.plasticity.probe; docs/design.md 9). Default: at task
    switches only, on 4 episodes of the last batch: a few seconds per switch on a CPU for
    full-size stag hunt episodes; `every` > 0 repeats that cost every `every` updates."""

    at_switch: bool = spec(True, bool, "probe at each task switch, before the method acts")
    every: int = spec(
        0,
        int,
        "also probe every n learner updates (0: only at switches)",
        check=ge0,
        allowed="an integer >= 0 (learner updates; 0: only at switches)",
    )
    steps: int = spec(
        100,
        int,
        "full-batch Adam steps of each fit (the copy's and the fresh network's)",
        check=ge1,
        allowed="an integer >= 1 (optimizer steps)",
    )
    # The project's training lr (docs/design.md 5): trainability at the step size it trains with.
    lr: float = spec(
        0.001, float, "Adam learning rate of the fits", check=gt0, allowed="a number > 0"
    )
    batch: int = spec(
        4,
        int,
        "episodes of the learner's latest batch the probe fits on",
        check=ge1,
        allowed="an integer >= 1 (episodes)",
    )

    def __post_init__(self) -> None:
        validate_fields(self, "plasticity.probe")

    def probe_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of TrainabilityProbe (its seed is the run's)."""
        return {
            "steps": self.steps,
            "lr": self.lr,
            "every": self.every,
            "at_switch": self.at_switch,
        }

    @property
    def enabled(self) -> bool:
        return self.at_switch or self.every > 0


PROBE_KEYS = tuple(f.name for f in fields(ProbeConfig))


@dataclass(frozen=True)
class PlasticityConfig:
    method: str = "none"
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def intervention_options(self) -> dict[str, Any]:
        """The running method's own options."""
        return dict(self.options.get(self.method, {}))

    def build_intervention(self):
        return build_intervention(self.method, **self.intervention_options)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "monitor": asdict(self.monitor),
            "probe": asdict(self.probe),
            "options": {m: dict(o) for m, o in self.options.items()},
        }

    @classmethod
    def from_mapping(
        cls,
        raw: Mapping[str, Any] | None,
        algorithm: str | None = None,
        networks: tuple[str, ...] | None = None,
    ) -> PlasticityConfig:
        """Parse and validate a `plasticity:` section (module docstring). With `networks`
        (the algorithm's plasticity networks), scopes are checked against them."""
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise ValueError(f"plasticity: must be a mapping, got {raw!r}")
        for key in raw:
            if key not in SECTION_KEYS:
                raise ValueError(_misplaced(key, raw.get("method", "none")))
        method = raw.get("method", "none")
        if method not in INTERVENTIONS:
            raise ValueError(
                f"plasticity.method: unknown {method!r}; allowed: {', '.join(INTERVENTIONS)}"
            )
        monitor = MonitorConfig(**_section(raw, "monitor", MONITOR_KEYS))
        probe = ProbeConfig(**_section(raw, "probe", PROBE_KEYS))
        options_raw = raw.get("options") or {}
        if not isinstance(options_raw, Mapping):
            raise ValueError(
                f"plasticity.options: must map method names to their options, got {options_raw!r}"
            )
        options: dict[str, dict[str, Any]] = {}
        for name, block in options_raw.items():
            if name not in INTERVENTIONS:
                raise ValueError(
                    f"plasticity.options.{name}: not a method; allowed: {', '.join(INTERVENTIONS)}"
                )
            block = {} if block is None else block
            if not isinstance(block, Mapping):
                raise ValueError(f"plasticity.options.{name}: must be a mapping, got {block!r}")
            _check_options(name, dict(block), networks)
            options[name] = dict(block)
        config = cls(method=method, monitor=monitor, options=options, probe=probe)
        if networks is not None:
            _check_default_scope(config, algorithm or "this algorithm", networks)
        return config


def _section(raw: Mapping[str, Any], name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """`plasticity.<name>` as a dict of known keys (None: empty)."""
    block = raw.get(name) or {}
    if not isinstance(block, Mapping):
        raise ValueError(f"plasticity.{name}: must be a mapping, got {block!r}")
    for key in block:
        if key not in keys:
            raise ValueError(f"plasticity.{name}.{key}: unknown key; allowed: {', '.join(keys)}")
    return dict(block)


def _misplaced(key: str, method: str) -> str:
    allowed = ", ".join(SECTION_KEYS)
    in_monitor = key in MONITOR_KEYS
    owners = [m for m in INTERVENTIONS if key in intervention_options(m)]
    where = []
    if in_monitor:
        where.append(f"plasticity.monitor.{key} (the stagnation monitor)")
    if owners:
        owner = method if method in owners else owners[0]
        where.append(f"plasticity.options.{owner}.{key} (that method's own option)")
    if len(where) == 2:
        return f"plasticity.{key}: ambiguous; write {' or '.join(where)}. Allowed keys: {allowed}"
    if where:
        return f"plasticity.{key}: belongs under {where[0]}. Allowed keys: {allowed}"
    return f"plasticity.{key}: unknown key; allowed: {allowed}"


def _check_options(method: str, options: dict[str, Any], networks: tuple[str, ...] | None) -> None:
    valid = intervention_options(method)
    for key in options:
        if key not in valid:
            raise ValueError(
                f"plasticity.options.{method}.{key}: unknown option; allowed: {', '.join(valid)}"
            )
    try:
        build_intervention(method, **options)
    except (ValueError, TypeError) as err:
        raise ValueError(f"plasticity.options.{method}: {err}") from None
    if networks is None:
        return
    for entry in _scope_entries(options.get("scope")):
        if not isinstance(entry, str) or entry.split(".")[0] not in networks:
            names = ", ".join(repr(n) for n in networks)
            raise ValueError(
                f"plasticity.options.{method}.scope: {entry!r} names no layer; allowed: 'all', "
                f"{names} or a module path under them (e.g. 'agent.fc1.0')"
            )


def _scope_entries(scope: Any) -> list[Any]:
    return [] if scope in (None, "all") else [scope] if isinstance(scope, str) else list(scope)


def _check_default_scope(
    config: PlasticityConfig, algorithm: str, networks: tuple[str, ...]
) -> None:
    """A method whose own default scope names networks the algorithm lacks (ReBorn's is the
    QMIX mixer) is refused unless the config gives a scope."""
    if config.intervention_options.get("scope") is not None:
        return
    default = config.build_intervention().scope
    outside = [e for e in _scope_entries(default) if e.split(".")[0] not in networks]
    if outside:
        raise ValueError(
            f"plasticity.method: {config.method!r} acts on {', '.join(outside)} by default, "
            f"which {algorithm} does not have (its plasticity networks: {', '.join(networks)}); "
            f"give plasticity.options.{config.method}.scope"
        )


def validate_plasticity(
    config: Mapping[str, Any] | None, algorithm: str, networks: tuple[str, ...]
) -> PlasticityConfig:
    """Raise ValueError naming the field for a bad plasticity config (cheap, no model);
    `networks`: the algorithm's plasticity networks (knife.policies.registry)."""
    return PlasticityConfig.from_mapping(config, algorithm, networks)


def describe_options(method: str) -> list[tuple[str, Any]]:
    """(option, default) of a method's own options, for `knife config`."""
    return list(option_defaults(method).items())
