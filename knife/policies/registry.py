"""The algorithms this package trains, by name: the mixer each one uses and the networks a
plasticity intervention may touch (docs/design.md 5).

Everything that depends on the algorithm reads it here: the config's `algorithm` choices,
the RLModule's mixer, and `QMixRLModule.plasticity_networks()`, which is how the plasticity
toolkit learns which networks exist. Adding an algorithm is one entry (and its mixer in
knife.policies.mixers). Imports nothing heavy: config validation reads it before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlgorithmSpec:
    """One value-based MARL algorithm over the shared GRU agent network."""

    name: str
    mixer: str  # a key of knife.policies.mixers.MIXERS
    # The networks (module attributes, each with its target at `target_<name>`) that
    # plasticity metrics and interventions act on; a parameter-free mixer is not one.
    networks: tuple[str, ...]
    doc: str


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec(
            "qmix", "qmix", ("agent", "mixer"), "monotonic hypernetwork mixer (Rashid et al. 2018)"
        ),
        AlgorithmSpec("vdn", "vdn", ("agent",), "sum of agent Qs (Sunehag et al. 2018)"),
        AlgorithmSpec(
            "iql",
            "independent",
            ("agent",),
            "independent Q-learning: each agent's own TD loss on the team reward (Tan 1993; "
            "pymarl's mixer=None)",
        ),
    )
}


def algorithm_spec(name: str) -> AlgorithmSpec:
    """The spec of `name`, or a ValueError naming the field and the allowed names."""
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm: unknown {name!r}; allowed: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
