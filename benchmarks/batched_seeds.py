"""Would batching K seeds into one Learner pay on this CPU? An upper bound, measured.

K seeds of one config in one Learner (stacked parameters, `torch.func.vmap` or grouped
matmuls) do the same arithmetic as K separate updates; what batching can save is the fixed
cost per op (dispatch, small-kernel overhead). The cheapest possible batched update is one
update of ONE network on a batch K times larger: the same arithmetic as K members, with
every fixed cost paid once, and none of the stacking's own costs (bmm instead of mm,
per-member gradient clipping, per-member Adam state). So

    bound(K) = K x (time of one update at batch B) / (time of one update at batch K x B)

is the most any seed batching can gain. It is measured here with the real Learner
(QMixTorchLearner, RLlib's update path) on the same kinds of batches as
benchmarks/update_and_sampling.py, the two sides alternated and repeated (medians):

    python benchmarks/batched_seeds.py [--updates 40] [--repeats 3] [--ks 4 8]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from knife.policies import QMixConfig

STAG_HUNT = ("stag_hunt", {"world_shape": [5, 5], "n_agents": 2, "n_stags": 1, "episode_limit": 25})
CLIMBING = ("matrix:climbing", {})  # one-step episodes: fixed costs are the largest share
BATCH = 32


def _algo(env: tuple[str, dict], batch_size: int, episodes: int) -> Any:
    cfg = (
        QMixConfig()
        .environment(env=env[0], env_config=env[1])
        .training(
            algorithm="qmix",
            batch_size=batch_size,
            learning_starts=batch_size,
            buffer_size=max(5000, episodes),
            test_interval=10**9,
            td_lambda=0.0,
        )
        .env_runners(num_env_runners=0)
        .debugging(seed=0)
    )
    algo = cfg.build_algo()
    runner = algo.env_runner_group.local_env_runner
    for ep in runner.sample(num_episodes=episodes, explore=True)["episodes"]:
        algo.replay_buffer.add(ep)
    return algo


def seconds_per_update(algo: Any, n: int) -> float:
    algo._update_once(reduce=True)  # warm-up
    start = time.perf_counter()
    for k in range(n):
        algo._update_once(reduce=k == n - 1)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    out: dict[str, Any] = {}
    for name, env in (("stag_hunt", STAG_HUNT), ("climbing", CLIMBING)):
        sizes = [BATCH] + [k * BATCH for k in args.ks]
        algos = {b: _algo(env, b, episodes=max(sizes)) for b in sizes}
        times: dict[int, list[float]] = {b: [] for b in sizes}
        for _ in range(args.repeats):
            for b in sizes:  # alternated, so load swings hit every size alike
                times[b].append(seconds_per_update(algos[b], args.updates))
        for algo in algos.values():
            algo.stop()
        med = {b: float(np.median(v)) for b, v in times.items()}
        out[name] = {f"ms_per_update_batch_{b}": 1e3 * t for b, t in med.items()} | {
            f"bound_K{k}": k * med[BATCH] / med[k * BATCH] for k in args.ks
        }
        out[name]["runs_ms"] = {b: [1e3 * t for t in v] for b, v in times.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
