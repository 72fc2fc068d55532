"""The plasticity section of a run's config: monitor options + one intervention.

Validated here, without building a model, so bad input stops before Ray starts.
"""

from __future__ import annotations

from typing import Any

from knife.plasticity.interventions import INTERVENTIONS, build_intervention

NETWORKS = ("agent", "mixer")  # the networks of a value-factorization model
MONITOR_OPTIONS = ("tau", "beta", "signal")
HOOK_OPTIONS = ("method", "metrics_interval", *MONITOR_OPTIONS)
PLASTICITY_DEFAULTS: dict[str, Any] = {
    "method": "none",
    "tau": 0.25,
    "beta": 0.99,
    "signal": "grad",
    "metrics_interval": 20,
}


def split_options(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """{hook/monitor options} and {intervention options} of a plasticity config."""
    merged = {**PLASTICITY_DEFAULTS, **config}
    hook = {k: merged[k] for k in HOOK_OPTIONS}
    return hook, {k: v for k, v in merged.items() if k not in HOOK_OPTIONS}


def validate_plasticity(config: dict[str, Any], mixer: str) -> None:
    """Raise ValueError naming the field for a bad plasticity config (cheap, no model)."""
    hook, options = split_options(config)
    if hook["method"] not in INTERVENTIONS:
        raise ValueError(
            f"plasticity.method: unknown {hook['method']!r}; allowed: {', '.join(INTERVENTIONS)}"
        )
    try:
        build_intervention(hook["method"], **options)
    except (ValueError, TypeError) as err:
        raise ValueError(f"plasticity: {err}") from None
    if not 0.0 < float(hook["tau"]) <= 1.0:
        raise ValueError(f"plasticity.tau: {hook['tau']} is outside (0, 1]")
    if not 0.0 <= float(hook["beta"]) < 1.0:
        raise ValueError(f"plasticity.beta: {hook['beta']} is outside [0, 1)")
    if hook["signal"] not in ("grad", "update"):
        raise ValueError(f"plasticity.signal: unknown {hook['signal']!r}; allowed: grad, update")
    if int(hook["metrics_interval"]) < 1:
        raise ValueError("plasticity.metrics_interval: must be a positive int")
    scope = options.get("scope")
    entries = [] if scope in (None, "all") else [scope] if isinstance(scope, str) else scope
    for entry in entries:
        if not isinstance(entry, str) or entry.split(".")[0] not in NETWORKS:
            raise ValueError(
                f"plasticity.scope: {entry!r} names no layer; allowed: 'all', 'agent', "
                "'mixer' or a module path under them (e.g. 'agent.fc1.0', 'mixer.hyper_w1.0')"
            )
    if hook["method"] == "reborn" and mixer != "qmix" and options.get("scope") in (None, "mixer"):
        raise ValueError(
            "plasticity.method: 'reborn' acts on the QMIX mixer; VDN has no mixer parameters "
            "(use algorithm qmix, or give plasticity.scope)"
        )
