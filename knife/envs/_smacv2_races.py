"""SMACv2 race scenarios shared by the `smacv2:` and `smax:` adapters (no heavy imports).

A race scenario is named `<race>_<n_units>_vs_<n_enemies>`, e.g. `protoss_5_vs_5`. The unit
types, weights and exception units per race are SMACv2's official capability configs
(shared/reference/smacv2_env_info.md). Both adapters accept any 1 <= n_units <= n_enemies
(SMACv2's weighted-teams distribution requires n_enemies >= n_units); `STANDARD_SCENARIOS`
lists the ones SMACv2 publishes results for.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass

RACES = ("protoss", "terran", "zerg")
# Unit types per race, in SMACv2's order; `WEIGHTS` pairs with them.
RACE_UNIT_TYPES: dict[str, tuple[str, str, str]] = {
    "protoss": ("stalker", "zealot", "colossus"),
    "terran": ("marine", "marauder", "medivac"),
    "zerg": ("zergling", "hydralisk", "baneling"),
}
WEIGHTS = (0.45, 0.45, 0.1)
# Units a team may not consist of entirely (the official protoss config lists none).
EXCEPTION_UNIT_TYPES: dict[str, tuple[str, ...]] = {
    "protoss": (),
    "terran": ("medivac",),
    "zerg": ("baneling",),
}
STANDARD_SIZES = ((5, 5), (10, 10), (20, 20), (10, 11), (20, 23))
STANDARD_SCENARIOS = tuple(f"{race}_{n}_vs_{m}" for race in RACES for n, m in STANDARD_SIZES)
MAP_SIZE = 32  # SMACv2's 32x32_flat map
EPISODE_LIMIT = 200

_NAME = re.compile(r"^(protoss|terran|zerg)_([1-9][0-9]*)_vs_([1-9][0-9]*)$")


@dataclass(frozen=True)
class RaceScenario:
    race: str
    n_units: int
    n_enemies: int

    @property
    def name(self) -> str:
        return f"{self.race}_{self.n_units}_vs_{self.n_enemies}"


def parse_race_scenario(name: str) -> RaceScenario | None:
    """The race scenario `name` names, None when it is not of the form race_N_vs_M.

    Raises ValueError for the right form with impossible sizes (more allies than enemies).
    """
    m = _NAME.match(name) if isinstance(name, str) else None
    if m is None:
        return None
    race, n, k = m.group(1), int(m.group(2)), int(m.group(3))
    if n > k:
        raise ValueError(
            f"env: scenario {name!r} has more allies ({n}) than enemies ({k}); SMACv2 team "
            f"generation needs n_units <= n_enemies"
        )
    return RaceScenario(race, n, k)


def has_module(name: str) -> bool:
    """Whether `name` can be imported, without importing it (a hidden module counts as not)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


class MissingDependencyError(ImportError, ValueError):
    """An optional dependency is not installed.

    Also a ValueError so that config validation (which reports ValueErrors as config errors
    before Ray starts) shows the install hint instead of a traceback.
    """
