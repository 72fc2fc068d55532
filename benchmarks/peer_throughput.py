"""knife-marl's QMIX against EPyMARL's and JaxMARL's, side by side, on MPE simple_spread.

Every side trains QMIX with recurrent (GRU) agents and EPyMARL's QMIX settings (batch 32
episodes, buffer 5000, Adam 5e-4, 1-step double-Q targets, hard target update every 200
updates, epsilon 1 -> 0.05 over 50k steps, standardised rewards, mixer embed 32, hidden 64;
100 greedy test episodes at 50k steps) for `--steps` env steps, each as its own process, in
turn, once per seed. Two data cadences (docs/performance.md, "Data cadence"):

  episode cadence: one env, one learner update per collected 25-step episode
    ours              knife train benchmarks/configs/spread_qmix_epymarl.yaml --set seed=S
    epymarl           python src/main.py --config=qmix --env-config=gymma with use_rnn=True
                      env_args.key=pz-mpe-simple-spread-v3 env_args.time_limit=25 t_max=... seed=S
    jaxmarl           JaxMARL's jitted baselines/QLearning/qmix_rnn.py (benchmarks/jaxmarl_side.py
                      says how its 26-step episodes and RAdam are matched)
  parallel cadence: 8 envs in lockstep, one update per collection of 8 episodes
    ours-parallel     the same config --set training.num_envs_per_env_runner=8
                      --set training.updates_per_episode=0.125
    epymarl-parallel  the same EPyMARL command with runner=parallel batch_size_run=8
  on request (--sides), sampling in the driver instead of an EnvRunner actor:
    ours-local, ours-parallel-local   the same --set training.num_env_runners=0

Reported per run: train env steps/s over the whole job (wall clock of the process: start-up,
compilation, tests and all), the greedy test return at the end (summed over agents), and peak
memory (RSS summed over the process and all its descendants, Ray's processes included; sampled
every 0.1 s), and the same for the trial's own processes only (driver with its Learner, and
EnvRunner actors). Then per side the median steps/s and mean +- std of the test returns over
seeds, and the median over seeds of each pair's steps/s ratio (ours/epymarl,
ours-parallel/epymarl-parallel, ours/jaxmarl). The order of the sides rotates with the seed,
so drift on a shared machine hits all of them alike.

EPyMARL and JaxMARL are not dependencies: pass the path of a checkout with its own Python
environment (docs/performance.md says what each needs); sides without one are skipped.

    python benchmarks/peer_throughput.py --epymarl /path/to/epymarl \\
        --jaxmarl /path/to/JaxMARL --jaxmarl-python /path/to/jaxmarl-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import PeakMemory  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "benchmarks" / "configs" / "spread_qmix_epymarl.yaml"
PARALLEL_ENVS = 8  # EPyMARL's batch_size_run, our num_envs_per_env_runner
EPYMARL_ARGS = [
    "--config=qmix",
    "--env-config=gymma",
    "with",
    "use_rnn=True",
    "use_cuda=False",
    "env_args.key=pz-mpe-simple-spread-v3",
    "env_args.time_limit=25",
]
PARALLEL = [
    f"training.num_envs_per_env_runner={PARALLEL_ENVS}",
    f"training.updates_per_episode={1 / PARALLEL_ENVS}",
]
LOCAL = ["training.num_env_runners=0"]  # sampling in the driver: no EnvRunner actor, no overlap
OURS_OVERRIDES = {
    "ours": [],
    "ours-parallel": PARALLEL,
    "ours-local": LOCAL,  # the local sides are not in the default --sides
    "ours-parallel-local": PARALLEL + LOCAL,
}
EPYMARL_OVERRIDES = {
    "epymarl": [],
    "epymarl-parallel": ["runner=parallel", f"batch_size_run={PARALLEL_ENVS}"],
}
SIDES = ["ours", "epymarl", "jaxmarl", "ours-parallel", "epymarl-parallel"]
PAIRS = [
    ("ours", "epymarl"),
    ("ours-parallel", "epymarl-parallel"),
    ("ours", "jaxmarl"),
    ("ours-parallel-local", "epymarl-parallel"),
    ("ours-local", "ours"),
    ("ours-parallel-local", "ours-parallel"),
]
LOCAL_SIDES = ["ours-local", "ours-parallel-local"]


def run_measured(
    cmd: list[str], cwd: Path, env: dict[str, str]
) -> tuple[float, tuple[int, int], str]:
    """Run `cmd`; return (wall seconds, (peak RSS summed over its process tree, the same
    for the trial's own processes only: PeakMemory.peak_trial), output)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        with PeakMemory(proc.pid, interval=0.1) as mem:
            code = proc.wait()
            wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    peak = (mem.peak, mem.peak_trial)
    if code != 0:
        raise RuntimeError(f"{cmd[:3]} exited with {code}:\n{text[-3000:]}")
    return wall, peak, text


def run_ours(side: str, seed: int, steps: int, workdir: Path) -> dict:
    runs = workdir / f"{side}-{seed}"
    sets = [f"seed={seed}", f"steps={steps}", *OURS_OVERRIDES[side]]
    cmd = [sys.executable, "-m", "knife.platform.cli", "train", str(CONFIG)]
    cmd += [a for s in sets for a in ("--set", s)] + ["--runs-dir", str(runs)]
    wall, peak, _ = run_measured(cmd, ROOT, dict(os.environ))
    [summary_file] = runs.glob("train/*/summary.json")
    summary = json.loads(summary_file.read_text())
    return _row(side, seed, summary["env_steps"], wall, peak, summary["final"]["test/return"])


def run_epymarl(side: str, seed: int, steps: int, path: Path, python: str, workdir: Path) -> dict:
    results = workdir / f"{side}-{seed}"
    # test_interval = t_max: gymma's 50k at the default --steps, and a final test at shorter
    # ones (EPyMARL also tests once before training)
    cmd = [
        python, "src/main.py", *EPYMARL_ARGS, *EPYMARL_OVERRIDES[side],
        f"t_max={steps}", f"test_interval={steps}", f"seed={seed}",
        f"local_results_path={results}",
    ]  # fmt: skip
    # main.py's sacred observer writes under the checkout's results/sacred/, whatever
    # local_results_path says: this run's record is the directory that is new after it.
    sacred = path / "results" / "sacred"
    before = set(sacred.glob("**/info.json"))
    wall, peak, text = run_measured(cmd, path, {**os.environ, "PYTHONWARNINGS": "ignore"})
    # Read the test returns from sacred's record, not the console: the console prints the
    # mean of the last 5 logged tests at each log_interval, which (gymma: 50k) can come
    # before the final test.
    [info_file] = set(sacred.glob("**/info.json")) - before
    info = json.loads(info_file.read_text())
    test_t, returns = info.get("test_return_mean_T", []), info.get("test_return_mean", [])
    if not returns or test_t[-1] < steps:
        raise RuntimeError(f"no greedy test at {steps} steps in {info_file}:\n{text[-3000:]}")
    # EPyMARL trains while t_env <= t_max and tests in the iteration that passes it, so the
    # last test's t_env is the number of train env steps.
    return _row(side, seed, test_t[-1], wall, peak, _scalar(returns[-1]))


def run_jaxmarl(seed: int, steps: int, path: Path, python: str) -> dict:
    script = ROOT / "benchmarks" / "jaxmarl_side.py"
    cmd = [python, str(script), "--jaxmarl", str(path), "--seed", str(seed), "--steps", str(steps)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "WANDB_MODE": "disabled"}
    wall, peak, text = run_measured(cmd, ROOT, env)
    result = json.loads(text.strip().splitlines()[-1])
    row = _row("jaxmarl", seed, result["env_steps"], wall, peak, result["test_return"])
    row.update(compile_s=result["compile_s"], run_s=result["run_s"])
    return row


def _scalar(value: object) -> float:
    # sacred stores numpy scalars as {"py/object": ..., "value": x} or as plain numbers
    return float(value["value"] if isinstance(value, dict) else value)


def _row(side: str, seed: int, steps: int, wall: float, peak: tuple[int, int], ret: float) -> dict:
    return {
        "side": side,
        "seed": seed,
        "env_steps": steps,
        "wall_s": wall,
        "env_steps_per_s": steps / wall,
        "peak_mem_mb": peak[0] / 2**20,
        # The trial's own processes (driver/Learner and EnvRunner actors), without Ray's.
        "peak_trial_mem_mb": peak[1] / 2**20,
        "test_return": ret,
    }


def _mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):8.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:5.2f}"


def _peer(parser: argparse.ArgumentParser, name: str, path: Path | None, python: str | None,
          marker: str, default_python: str) -> str | None:  # fmt: skip
    """The peer's Python, or None (its sides skipped) when no checkout was given."""
    if path is None:
        return None
    if not (path / marker).is_file():
        parser.error(f"--{name.lower()}: {path} has no {marker} (not a checkout of {name})")
    python = python or str(path / default_python)
    if not Path(python).exists():
        parser.error(f"--{name.lower()}-python: {python} does not exist")
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epymarl", type=Path, help="path of an EPyMARL checkout")
    parser.add_argument(
        "--epymarl-python",
        help="the Python of EPyMARL's environment (default: <checkout>/.venv/bin/python)",
    )
    parser.add_argument("--jaxmarl", type=Path, help="path of a JaxMARL checkout")
    parser.add_argument(
        "--jaxmarl-python",
        help="the Python of an environment with jaxmarl[algs]==0.2.0 and CPU jax "
        "(default: <checkout>/.venv/bin/python)",
    )
    parser.add_argument("--sides", nargs="+", choices=SIDES + LOCAL_SIDES, default=SIDES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--json", help="also write the rows to this file (rewritten per run)")
    args = parser.parse_args()

    epymarl_python = _peer(
        parser, "EPyMARL", args.epymarl, args.epymarl_python, "src/main.py", ".venv/bin/python"
    )
    jaxmarl_python = _peer(
        parser, "JaxMARL", args.jaxmarl, args.jaxmarl_python,
        "baselines/QLearning/qmix_rnn.py", ".venv/bin/python",
    )  # fmt: skip
    sides = [
        s
        for s in args.sides
        if not (s.startswith("epymarl") and epymarl_python is None)
        and not (s == "jaxmarl" and jaxmarl_python is None)
    ]
    if skipped := sorted(set(args.sides) - set(sides)):
        print(f"No checkout given for {', '.join(skipped)}: those sides are skipped.", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="peer-throughput-") as tmp:
        for i, seed in enumerate(args.seeds):
            k = i % len(sides)
            for side in sides[k:] + sides[:k]:
                if side in OURS_OVERRIDES:
                    rows.append(run_ours(side, seed, args.steps, Path(tmp)))
                elif side in EPYMARL_OVERRIDES:
                    rows.append(
                        run_epymarl(side, seed, args.steps, args.epymarl, epymarl_python, Path(tmp))
                    )
                else:
                    rows.append(run_jaxmarl(seed, args.steps, args.jaxmarl, jaxmarl_python))
                r = rows[-1]
                print(
                    f"{r['side']:16s} seed {seed}: {r['env_steps_per_s']:6.0f} env steps/s "
                    f"({r['env_steps']} steps in {r['wall_s']:.1f} s), test return "
                    f"{r['test_return']:.2f}, peak {r['peak_mem_mb']:.0f} MB (trial's own "
                    f"processes {r['peak_trial_mem_mb']:.0f} MB)",
                    flush=True,
                )
                if args.json:  # written as it goes: a stopped run keeps what it measured
                    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")

    by_side: dict[str, list[dict]] = {}
    for r in rows:
        by_side.setdefault(r["side"], []).append(r)
    print(f"\n{'side':16s} {'env steps/s (median)':>21s} {'test return (mean +- std)':>27s} "
          f"{'peak MB (max)':>14s} {'trial MB (max)':>15s}")  # fmt: skip
    for side in sides:
        rs = by_side[side]
        sps = statistics.median(r["env_steps_per_s"] for r in rs)
        peak = max(r["peak_mem_mb"] for r in rs)
        trial = max(r["peak_trial_mem_mb"] for r in rs)
        print(f"{side:16s} {sps:21.0f} {_mean_std([r['test_return'] for r in rs]):>27s} "
              f"{peak:14.0f} {trial:15.0f}")  # fmt: skip
    print()
    for ours, peer in PAIRS:
        if ours in by_side and peer in by_side:
            pairs = zip(by_side[ours], by_side[peer], strict=True)
            ratios = [o["env_steps_per_s"] / p["env_steps_per_s"] for o, p in pairs]
            print(
                f"steps/s ratio {ours}/{peer}: median {statistics.median(ratios):.2f}x "
                f"(per seed: {', '.join(f'{x:.2f}' for x in ratios)})"
            )


if __name__ == "__main__":
    main()
