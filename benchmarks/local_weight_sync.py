"""Weights to the local EnvRunner with and without RLlib's ray.put, side by side in one run.

With sampling in the driver (`num_env_runners: 0`), knife's QMix hands the Learner's weights
to the local EnvRunner directly (knife.policies.algorithm._sync_weights); RLlib's
EnvRunnerGroup.sync_weights also puts them in Ray's object store for remote EnvRunners, even
when there are none. One Algorithm (the two-step game with the schedule of
tests/policies/test_qmix_e2e.py's two-step tests: tune_configs/train_two_step.yaml, built as
`knife train` builds it) trains
alternating blocks of `--block` iterations (1000 env steps each) under each; the medians of
the seconds per 1000 env steps and their ratio.

    python benchmarks/local_weight_sync.py [--block 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# tune_configs/train_two_step.yaml with the learning tests' buffer, tests and sampling.
TWO_STEP = (
    ROOT / "tune_configs" / "train_two_step.yaml",
    [
        "steps=1000000",  # the blocks decide when to stop
        "training.buffer_size=5000",
        "training.num_env_runners=0",
        "evaluation.interval=1000",
        "evaluation.episodes=4",
    ],
)


def _seconds_per_1000_steps(algo, iterations: int) -> float:
    steps, start = algo.counters["env_steps"], time.perf_counter()
    for _ in range(iterations):
        algo.train()
    return 1000 * (time.perf_counter() - start) / (algo.counters["env_steps"] - steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    from knife.platform.algorithm_factory import build_algorithm
    from knife.platform.config import load_trial_config

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    algo = build_algorithm(load_trial_config(*TWO_STEP))
    cls = type(algo)
    direct = cls._sync_weights

    def through_rllib(self) -> None:
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group, inference_only=True
        )
        self._weights_synced = True

    algo.train()  # past learning_starts: every later iteration updates and syncs
    seconds: dict[str, list[float]] = {"direct": [], "rllib": []}
    for _ in range(args.repeats):
        for side, sync in (("rllib", through_rllib), ("direct", direct)):  # alternating
            cls._sync_weights = sync
            seconds[side].append(_seconds_per_1000_steps(algo, args.block))
            print(f"{side}: {seconds[side][-1]:.2f} s per 1000 env steps", flush=True)
    cls._sync_weights = direct
    algo.stop()
    ray.shutdown()
    med = {side: statistics.median(s) for side, s in seconds.items()}
    print(f"\nmedian of {args.repeats} alternating blocks of {args.block} iterations")
    for side, s in seconds.items():
        print(f"{side}: {med[side]:.2f} s ({', '.join(f'{x:.2f}' for x in s)})")
    print(f"direct / rllib: {med['direct'] / med['rllib']:.2f}x")


if __name__ == "__main__":
    main()
