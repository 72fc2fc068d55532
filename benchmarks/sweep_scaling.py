"""Sweep scaling and the platform's per-iteration cost (issue 5).

1. Wall time of the same 4-trial sweep (2 methods x 2 seeds, a 2-task matrix-game
   sequence) run by `knife sweep` with 1 and with 2 concurrent trials, each a fresh
   `knife sweep` process (Ray start-up included, as a user sees it). Target: 2 concurrent
   at least 1.6x faster on a 2-core machine.
2. Time per training iteration of one trial config: the Algorithm alone (build once, then
   `algo.train()` + `result_metrics()` in a loop, no Tune, no MLflow) against the same
   config as a Tune trial that logs to MLflow (metrics per iteration, checkpoints, the
   final plots), from the 1-concurrent sweep above. The trial also measures itself: the
   seconds outside `algo.train()` over the seconds inside (`platform_overhead`).
   Target: under 10%.

    python benchmarks/sweep_scaling.py [--steps-per-task 1000] [--repeats 2] [--out FILE.json]

Prints a JSON summary (and writes it to --out if given). The load average of the
machine at start and end is part of the output: other work on a 2-core machine shows up
directly in the concurrency ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TRAINING = {
    "batch_size": 32,
    "learning_starts": 32,
    "buffer_size": 500,
    "epsilon_anneal_steps": 500,
    "target_update_interval": 50,
    "td_lambda": 0.0,
}


def sweep_file(folder: Path, steps_per_task: int) -> Path:
    raw = {
        "name": "scaling",
        "base": {
            "algorithm": "qmix",
            "training": TRAINING,
            "evaluation": {"episodes": 4, "interval": 100},
        },
        "grid": {
            "methods": ["none", "knife"],
            "seeds": [0, 1],
            "sequences": {
                "climb_pen": [
                    {"env": "matrix:climbing", "steps": steps_per_task},
                    {"env": "matrix:penalty", "steps": steps_per_task},
                ]
            },
        },
        "tune": {"max_concurrent_trials": 1, "checkpoint_every": 5},
    }
    path = folder / "scaling.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_sweep(path: Path, runs: Path, concurrent: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "knife.platform.cli",
            "sweep",
            str(path),
            "--runs-dir",
            str(runs),
            "--quiet",
            "--set",
            f"tune.max_concurrent_trials={concurrent}",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({concurrent} concurrent):\n{proc.stderr[-3000:]}")
    return {
        "concurrent": concurrent,
        "wall_s": round(wall, 2),
        "trial_span_s": round(trial_span(runs), 2),
        "trials": trial_stats(runs),
    }


def trial_stats(runs: Path) -> list[dict]:
    """Per trial: iterations and the trial's own clock (inside / outside algo.train())."""
    out = []
    for result_file in sorted((runs / "scaling").glob("*/result.json")):
        last = json.loads(result_file.read_text().strip().splitlines()[-1])
        out.append(
            {
                "trial": result_file.parent.name,
                "iterations": last["iteration"],
                "train_s": round(last["train_seconds"], 3),
                "platform_overhead": round(last["platform_overhead"], 4),
                "env_steps": last["env_steps"],
            }
        )
    return out


def trial_config(steps_per_task: int, seed: int, method: str) -> dict:
    return {
        "algorithm": "qmix",
        "seed": seed,
        "training": TRAINING,
        "evaluation": {"episodes": 4, "interval": 100},
        "plasticity": {"method": method},
        "tasks": {
            "name": "climb_pen",
            "tasks": [
                {"env": "matrix:climbing", "steps": steps_per_task},
                {"env": "matrix:penalty", "steps": steps_per_task},
            ],
        },
    }


def _alone(raw: dict) -> dict:
    """Build the Algorithm, then time algo.train() + result_metrics() to the budget."""
    from knife.platform.algorithm_factory import build_algorithm
    from knife.platform.config import parse_trial_config
    from knife.policies import result_metrics

    cfg = parse_trial_config(raw)
    algo = build_algorithm(cfg)
    iterations, t0 = 0, time.perf_counter()
    while True:
        metrics = result_metrics(algo.train())
        iterations += 1
        if metrics["env_steps"] >= cfg.steps:
            break
    seconds = time.perf_counter() - t0
    algo.stop()
    return {"iterations": iterations, "seconds": round(seconds, 3)}


def algorithm_alone(steps_per_task: int, configs: list[tuple[str, int]]) -> dict:
    """Each config in a 1-CPU Ray task: the same process setup as a Tune trial (Ray sets
    one OpenMP/torch thread per CPU there), without Tune and without MLflow."""
    import ray

    from knife.platform.ray_runtime import start_ray

    start_ray(num_cpus=1)
    try:
        task = ray.remote(num_cpus=1)(_alone)
        return {
            (m, s): ray.get(task.remote(trial_config(steps_per_task, s, m))) for m, s in configs
        }
    finally:
        ray.shutdown()


def trial_span(runs: Path) -> float:
    """Seconds from the first trial's start to the last trial's end (Tune's results): the
    sweep without the driver's and Ray's start-up and shutdown."""
    starts, ends = [], []
    for result_file in (runs / "scaling").glob("*/result.json"):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        starts.append(rows[0]["timestamp"] - rows[0]["time_this_iter_s"])
        ends.append(rows[-1]["timestamp"])
    return max(ends) - min(starts)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _key(trial_name: str) -> tuple[str, int]:
    """('knife', 0) from 'knife-s0-climb_pen_<tune trial id>'."""
    method, seed = trial_name.split("-")[:2]
    return method, int(seed[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-per-task", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats (min kept)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    configs = [(m, s) for m in ("none", "knife") for s in (0, 1)]
    summary: dict = {"cpus": os.cpu_count(), "load_at_start": load(), "repeats": []}
    # A/B in turns, so that other work on the machine hits both sides alike; the fastest
    # repeat of each side is the least disturbed one.
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="knife-scaling-") as tmp:
            folder = Path(tmp)
            path = sweep_file(folder, args.steps_per_task)
            one = run_sweep(path, folder / "runs1", 1)
            two = run_sweep(path, folder / "runs2", 2)
        alone = algorithm_alone(args.steps_per_task, configs)
        summary["repeats"].append(
            {
                "sweep_1_concurrent": one,
                "sweep_2_concurrent": two,
                "alone": {f"{m}-s{s}": v for (m, s), v in alone.items()},
                "load": load(),
            }
        )
    reps = summary["repeats"]
    wall1 = min(r["sweep_1_concurrent"]["wall_s"] for r in reps)
    wall2 = min(r["sweep_2_concurrent"]["wall_s"] for r in reps)
    span1 = min(r["sweep_1_concurrent"]["trial_span_s"] for r in reps)
    span2 = min(r["sweep_2_concurrent"]["trial_span_s"] for r in reps)
    summary["wall_s"] = {"1_concurrent": wall1, "2_concurrent": wall2}
    summary["speedup_2_vs_1"] = round(wall1 / wall2, 3)
    summary["speedup_2_vs_1_trial_span"] = round(span1 / span2, 3)

    # Per-iteration cost: the Algorithm alone vs the same trials inside Tune + MLflow
    # (1 concurrent, so nothing else of the sweep competes for the core in either case).
    rows = []
    for method, seed in configs:
        name = f"{method}-s{seed}"
        alone_s = min(r["alone"][name]["seconds"] / r["alone"][name]["iterations"] for r in reps)
        tune_s, in_trial = [], []
        for r in reps:
            for t in r["sweep_1_concurrent"]["trials"]:
                if _key(t["trial"]) == (method, seed):
                    tune_s.append(t["train_s"] * (1 + t["platform_overhead"]) / t["iterations"])
                    in_trial.append(t["platform_overhead"])
        rows.append(
            {
                "trial": name,
                "alone_s_per_iteration": round(alone_s, 4),
                "tune_mlflow_s_per_iteration": round(min(tune_s), 4),
                "overhead_vs_alone": round(min(tune_s) / alone_s - 1, 4),
                "overhead_measured_in_trial": round(min(in_trial), 4),
            }
        )
    summary["per_iteration"] = rows
    summary["mean_overhead_vs_alone"] = round(
        sum(r["overhead_vs_alone"] for r in rows) / len(rows), 4
    )
    summary["mean_overhead_in_trial"] = round(
        sum(r["overhead_measured_in_trial"] for r in rows) / len(rows), 4
    )
    summary["load_at_end"] = load()
    text = json.dumps(summary, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
