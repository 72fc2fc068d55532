"""Issue 15's two levers on this CPU, each measured side by side in one run (medians of
alternating repeats; these machines are noisy):

* learner updates/s: RLlib's way (the Learner's metrics reduced after every update, RLlib's
  per-parameter finiteness checks) against ours (one reduce per iteration, one fused check),
  on the same batches (QMIX, batch 32 episodes: the 2-agent 5x5 stag hunt, 25 steps each,
  and the climbing game, 1 step each);
* sampling env steps/s of one TeamEnvRunner (epsilon-greedy, the module's forward, no
  learning) with N = 1, 8, 32 envs in lockstep, on the stag hunt and on SMAX
  protoss_5_vs_5, each env's own vector env (NumPy; one vmapped JAX call); and at N = 32
  the same N envs looped one call per env (SerialVectorEnv: the previous slice's runner,
  and what envs without a vector form get).

    python benchmarks/update_and_sampling.py [--updates 200] [--steps 4000] [--repeats 3]
        [--no-smax] [--sampling-only]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from knife.envs import registry
from knife.policies import QMix, QMixConfig
from knife.policies.learner import QMixTorchLearner

STAG_HUNT = ("stag_hunt", {"world_shape": [5, 5], "n_agents": 2, "n_stags": 1, "episode_limit": 25})
SMAX = ("smax:protoss_5_vs_5", {})
CLIMBING = ("matrix:climbing", {})  # one-step episodes: the update's fixed costs dominate


def _algo(env: str, env_config: dict, **training: Any) -> Any:
    cfg = (
        QMixConfig()
        .environment(env=env, env_config=env_config)
        .training(
            algorithm="qmix", batch_size=32, learning_starts=32, test_interval=10**9, **training
        )  # fmt: skip
        .env_runners(num_env_runners=0)
        .debugging(seed=0)
    )
    return cfg.build_algo()


class RLlibWay:
    """The update as RLlib does it: reduce after every update, RLlib's own step."""

    def __enter__(self) -> None:
        self.step, self.once = QMixTorchLearner.apply_gradients, QMix._update_once
        QMixTorchLearner.apply_gradients = TorchLearner.apply_gradients
        QMix._update_once = lambda algo, reduce=True: self.once(algo, reduce=True)

    def __exit__(self, *exc: Any) -> None:
        QMixTorchLearner.apply_gradients, QMix._update_once = self.step, self.once


def updates_per_s(algo: Any, n: int) -> float:
    """n learner updates as one training iteration does them (only the last reduces)."""
    start = time.perf_counter()
    for k in range(n):
        algo._update_once(reduce=k == n - 1)
    return n / (time.perf_counter() - start)


@contextlib.contextmanager
def looped(env: str) -> Iterator[None]:
    """`env` without its vector form: make_vector loops over single envs."""
    entry, _ = registry._lookup(env)
    key = next(k for k, v in registry._ENTRIES.items() if v is entry)
    registry._ENTRIES[key] = dataclasses.replace(entry, vector=None)
    try:
        yield
    finally:
        registry._ENTRIES[key] = entry


def sampling_steps_per_s(env: tuple[str, dict], n_envs: int, steps: int) -> float:
    algo = _algo(*env, num_envs_per_env_runner=n_envs)
    try:
        runner = algo.env_runner_group.local_env_runner
        warm = 0  # warm-up: the first reset and SMAX's compiles (one per batch size)
        while warm < max(steps // 2, 40 * n_envs):
            warm += runner.sample(num_episodes=1, explore=True)["env_steps"]
        done, start = 0, time.perf_counter()
        while done < steps:
            done += runner.sample(num_episodes=1, explore=True)["env_steps"]
        return done / (time.perf_counter() - start)
    finally:
        algo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-smax", action="store_true")
    parser.add_argument("--sampling-only", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {}

    updates = () if args.sampling_only else (("stag_hunt", STAG_HUNT), ("climbing", CLIMBING))
    for name, env in updates:
        algo = _algo(*env, td_lambda=0.0)
        runner = algo.env_runner_group.local_env_runner
        for ep in runner.sample(num_episodes=64, explore=True)["episodes"]:
            algo.replay_buffer.add(ep)
        rates: dict[str, list[float]] = {"rllib": [], "ours": []}
        for _ in range(args.repeats):
            with RLlibWay():
                rates["rllib"].append(updates_per_s(algo, args.updates))
            rates["ours"].append(updates_per_s(algo, args.updates))
        algo.stop()
        med = {k: float(np.median(v)) for k, v in rates.items()}
        ratio = med["ours"] / med["rllib"]
        out[f"learner_updates_per_s_{name}"] = {**med, "ratio": ratio, "runs": rates}

    envs = [("stag_hunt", STAG_HUNT)] + ([] if args.no_smax else [("smax_protoss_5v5", SMAX)])
    for name, env in envs:
        per_n: dict[str, list[float]] = {"n1": [], "n8": [], "n32": [], "n32_looped": []}
        for _ in range(args.repeats):
            for key in per_n:
                n = int(key[1:].split("_")[0])
                with looped(env[0]) if key.endswith("looped") else contextlib.nullcontext():
                    per_n[key].append(sampling_steps_per_s(env, n, args.steps))
        med_n = {key: float(np.median(v)) for key, v in per_n.items()}
        out[f"sampling_{name}"] = {
            **{f"{key}_steps_per_s": v for key, v in med_n.items()},
            "n32_over_n1": med_n["n32"] / med_n["n1"],
            "n8_over_n1": med_n["n8"] / med_n["n1"],
            "n32_native_over_looped": med_n["n32"] / med_n["n32_looped"],
            "runs": per_n,
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
