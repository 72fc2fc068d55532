"""Cost of MLflow's system-metrics logging on a trial, measured side by side in one run.

`knife train` runs of the two-step game with `training.system_metrics_interval_s` off, at the
default (10 s) and at 1 s (ten times the default's load, to make a cost visible), interleaved
round by round so that load from other processes hits every variant alike. Reported: the
median time inside `algo.train()` per variant and its ratio to "off" (the monitor is a
thread of the trial process; what it costs shows up there), and how many samples it logged.

    python benchmarks/system_metrics_cost.py [--rounds 3] [--steps 3000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from knife.platform.config import load_trial_config
from knife.platform.train import run_trial

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"off": 0.0, "10 s (default)": 10.0, "1 s": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    from mlflow import MlflowClient

    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    samples: dict[str, list[int]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        for r in range(args.rounds):
            for name, interval in VARIANTS.items():
                cfg = load_trial_config(
                    ROOT / "tune_configs" / "train_two_step.yaml",
                    [f"steps={args.steps}", f"training.system_metrics_interval_s={interval}"],
                )
                summary = run_trial(cfg, runs, progress=False, echo=False)
                times[name].append(summary["train_seconds"])
                client = MlflowClient("sqlite:///" + str((runs / "mlflow.db").resolve()))
                history = client.get_metric_history(
                    summary["mlflow_run_id"], "system/cpu_utilization_percentage"
                )
                samples[name].append(len(history))
                print(f"round {r} {name:15s} train {summary['train_seconds']:.2f} s", flush=True)
    base = statistics.median(times["off"])
    print(f"\nmedian seconds inside algo.train() over {args.rounds} rounds, {args.steps} steps:")
    for name in VARIANTS:
        med = statistics.median(times[name])
        print(
            f"  {name:15s} {med:7.2f} s  x{med / base:.3f} of off   "
            f"samples logged: {statistics.median(samples[name]):.0f}"
        )


if __name__ == "__main__":
    main()
