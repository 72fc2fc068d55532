"""The GPU path, checked in one short run (issue 15; `benchmarks/gpu_check.sh` runs it).

1. agreement: one learner update on CUDA against the same update on the CPU, from the same
   weights, optimizer state and batch; the largest difference of the updated weights must be
   within TOLERANCE x the largest weight change (TF32 off, so both compute in float32);
2. learner updates/s on the CPU and on the GPU, measured side by side (same batch);
3. K trials at once on one GPU, each a Ray task asking for 1/K GPU (what a sweep's
   `tune.resources_per_trial: {gpu: 1/K}` asks), and their wall time against one;
4. peak GPU memory of one learner (torch.cuda.max_memory_allocated).
Without CUDA it runs the CPU side, says so and exits 0, so CI checks the script itself.

    python benchmarks/gpu_check.py [--env stag_hunt] [--updates 50] [--trials 4] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

TOLERANCE = 1e-3  # of the largest weight change in one update (float32 on both devices)
TRAINING = dict(
    algorithm="qmix",
    lr=5e-4,
    batch_size=32,
    learning_starts=32,
    buffer_size=64,
    epsilon_anneal_steps=1000,
    test_interval=10_000,
    test_episodes=1,
)
SMALL_STAG_HUNT = {"world_shape": [5, 5], "n_agents": 2, "n_stags": 1, "episode_limit": 25}


def _algo(env: str, env_config: dict, gpu: float) -> Any:
    from knife.policies import QMixConfig

    cfg = (
        QMixConfig()
        .environment(env=env, env_config=env_config)
        .training(**TRAINING)
        .env_runners(num_env_runners=0)
        .learners(num_learners=0, num_gpus_per_learner=gpu)
        .debugging(seed=0)
    )
    return cfg.build_algo()


def _batch(algo: Any, episodes: int = 32) -> Any:
    """A training batch of `episodes` whole episodes played by the untrained policy."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    runner = algo.env_runner_group.local_env_runner
    for ep in runner.sample(num_episodes=episodes, explore=True)["episodes"]:
        algo.replay_buffer.add(ep)
    batch = algo.replay_buffer.sample(TRAINING["batch_size"], np.random.default_rng(0))
    return MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(batch)}, TRAINING["batch_size"])


def _module(learner: Any) -> torch.nn.Module:
    from ray.rllib.core import DEFAULT_MODULE_ID

    return learner.module[DEFAULT_MODULE_ID]


def _weights(learner: Any) -> dict[str, np.ndarray]:
    """Every weight (online and target networks) by name, as CPU arrays."""
    state = _module(learner).state_dict()
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items() if v.numel()}


def _updates_per_s(learner: Any, batch: Any, n: int) -> float:
    learner.update(batch=batch)  # warm-up (CUDA kernels, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        learner.update(batch=batch, _no_metrics_reduce=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def agreement(cpu: Any, gpu: Any, batch: Any) -> dict[str, float]:
    """One update on each from the CPU learner's weights (copied into the other), with the
    optimizers as they are (fresh in the script: neither has stepped)."""
    cpu_learner, gpu_learner = cpu.learner_group._learner, gpu.learner_group._learner
    _module(gpu_learner).load_state_dict(_module(cpu_learner).state_dict())
    before = _weights(cpu_learner)
    cpu_learner.update(batch=batch)
    gpu_learner.update(batch=batch)
    after_cpu, after_gpu = _weights(cpu_learner), _weights(gpu_learner)
    change = max(float(np.abs(after_cpu[k] - before[k]).max()) for k in before)
    diff = max(float(np.abs(after_cpu[k] - after_gpu[k]).max()) for k in before)
    return {"max_weight_change": change, "max_cpu_gpu_diff": diff, "ratio": diff / change}


def _trial(env: str, env_config: dict, gpu: float, updates: int) -> float:
    """One trial's learner on a GPU share: its updates/s (a Ray task)."""
    algo = _algo(env, env_config, gpu)
    try:
        return _updates_per_s(algo.learner_group._learner, _batch(algo), updates)
    finally:
        algo.stop()


def concurrent_trials(env: str, env_config: dict, k: int, updates: int) -> dict[str, float]:
    import ray

    remote = ray.remote(num_gpus=1.0 / k, num_cpus=0)(_trial)
    start = time.perf_counter()
    ray.get(remote.remote(env, env_config, 1.0 / k, updates))
    one = time.perf_counter() - start
    start = time.perf_counter()
    rates = ray.get([remote.remote(env, env_config, 1.0 / k, updates) for _ in range(k)])
    together = time.perf_counter() - start
    return {
        "trials": k,
        "wall_s_one": one,
        "wall_s_all": together,
        "updates_per_s_each": float(np.median(rates)),
        "updates_per_s_total": float(sum(rates)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="stag_hunt")
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    env_config = SMALL_STAG_HUNT if args.env == "stag_hunt" else {}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cuda = torch.cuda.is_available()
    out: dict[str, Any] = {"cuda": cuda, "env": args.env, "tolerance": TOLERANCE}
    ray.init(num_cpus=2, num_gpus=1 if cuda else 0, include_dashboard=False)
    try:
        cpu = _algo(args.env, env_config, 0)
        batch = _batch(cpu)
        out["cpu_updates_per_s"] = _updates_per_s(cpu.learner_group._learner, batch, args.updates)
        if not cuda:
            print(
                "no CUDA device: measured the CPU side only (agreement, GPU rate, shares skipped)"
            )
        else:
            gpu = _algo(args.env, env_config, 1)
            torch.cuda.reset_peak_memory_stats()
            out["agreement"] = agreement(cpu, gpu, batch)
            out["agreement_ok"] = out["agreement"]["ratio"] <= TOLERANCE
            gpu_learner = gpu.learner_group._learner
            out["gpu_updates_per_s"] = _updates_per_s(gpu_learner, batch, args.updates)
            out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            out["gpu_over_cpu"] = out["gpu_updates_per_s"] / out["cpu_updates_per_s"]
            gpu.stop()
            out["concurrent"] = concurrent_trials(args.env, env_config, args.trials, args.updates)
        cpu.stop()
    finally:
        ray.shutdown()
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    if cuda and not out["agreement_ok"]:
        raise SystemExit(f"CUDA and CPU updates differ: {out['agreement']}")
    return out


if __name__ == "__main__":
    main()
