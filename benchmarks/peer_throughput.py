"""knife-marl's QMIX against EPyMARL's, side by side, on mpe2 simple_spread_v3 (issue 8).

Both sides train QMIX with recurrent (GRU) agents and EPyMARL's QMIX settings (batch 32
episodes, buffer 5000, one update per collected episode, Adam 5e-4, 1-step double-Q targets,
hard target update every 200 updates, epsilon 1 -> 0.05 over 50k steps, standardised
rewards, mixer embed 32, hidden 64; 100 greedy test episodes at 50k steps) for `--steps` env
steps, each as its own process, the two in turn, once per seed:

  ours      knife train benchmarks/configs/spread_qmix_epymarl.yaml --set seed=S
  epymarl   python src/main.py --config=qmix --env-config=gymma with use_rnn=True
            env_args.key=pz-mpe-simple-spread-v3 env_args.time_limit=25 t_max=... seed=S

Reported per run: train env steps/s over the whole job (wall clock of the process: start-up,
tests and all), the greedy test return at the end, and peak memory (RSS summed over the
process and all its descendants, Ray's processes included; sampled every 0.1 s), and the
same for the trial's own processes only (driver with its Learner, and EnvRunner actors). Then the
median ratio of steps/s over the pairs, and mean +- std of the test returns over seeds.

EPyMARL is not a dependency: pass the path of a checkout (uoe-agents/epymarl) with its own
Python environment (README "Speed against EPyMARL" says what it needs); without one, only our
side runs.

    python benchmarks/peer_throughput.py --epymarl /path/to/epymarl [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import PeakMemory  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "benchmarks" / "configs" / "spread_qmix_epymarl.yaml"
EPYMARL_ARGS = [
    "--config=qmix",
    "--env-config=gymma",
    "with",
    "use_rnn=True",
    "use_cuda=False",
    "env_args.key=pz-mpe-simple-spread-v3",
    "env_args.time_limit=25",
]
_TEST_RETURN = re.compile(r"test_return_mean:\s+(-?[\d.]+)")


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


def run_ours(seed: int, steps: int, workdir: Path) -> dict:
    runs = workdir / f"ours-{seed}"
    cmd = [
        sys.executable, "-m", "knife.platform.cli", "train", str(CONFIG),
        "--set", f"seed={seed}", "--set", f"steps={steps}", "--runs-dir", str(runs),
    ]  # fmt: skip
    wall, peak, _ = run_measured(cmd, ROOT, dict(os.environ))
    [summary_file] = runs.glob("train/*/summary.json")
    summary = json.loads(summary_file.read_text())
    return _row("ours", seed, summary["env_steps"], wall, peak, summary["final"]["test/return"])


def run_epymarl(seed: int, steps: int, path: Path, python: str, workdir: Path) -> dict:
    results = workdir / f"epymarl-{seed}"
    cmd = [
        python, "src/main.py", *EPYMARL_ARGS,
        f"t_max={steps}", f"seed={seed}", f"local_results_path={results}",
    ]  # fmt: skip
    wall, peak, text = run_measured(cmd, path, {**os.environ, "PYTHONWARNINGS": "ignore"})
    returns = _TEST_RETURN.findall(text)
    if not returns:
        raise RuntimeError(f"no test_return_mean in EPyMARL's output:\n{text[-3000:]}")
    # EPyMARL stops after the first episode that passes t_max: steps = t_max rounded up to
    # whole 25-step episodes.
    env_steps = -(-steps // 25) * 25
    return _row("epymarl", seed, env_steps, wall, peak, float(returns[-1]))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epymarl", type=Path, help="path of an EPyMARL checkout")
    parser.add_argument(
        "--epymarl-python",
        help="the Python of EPyMARL's environment (default: <checkout>/.venv/bin/python)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    python = None
    if args.epymarl is None:
        print("No --epymarl checkout given: running our side only (no ratio).", flush=True)
    else:
        if not (args.epymarl / "src" / "main.py").is_file():
            parser.error(f"--epymarl: {args.epymarl} has no src/main.py (not an EPyMARL checkout)")
        python = args.epymarl_python or str(args.epymarl / ".venv" / "bin" / "python")
        if not Path(python).exists():
            parser.error(f"--epymarl-python: {python} does not exist")

    rows = []
    with tempfile.TemporaryDirectory(prefix="peer-throughput-") as tmp:
        for i, seed in enumerate(args.seeds):
            # Alternate which side goes first, so drift on a shared machine hits both alike.
            sides = ["ours", "epymarl"] if i % 2 == 0 else ["epymarl", "ours"]
            for side in sides:
                if side == "ours":
                    rows.append(run_ours(seed, args.steps, Path(tmp)))
                elif python is not None:
                    rows.append(run_epymarl(seed, args.steps, args.epymarl, python, Path(tmp)))
                else:
                    continue
                r = rows[-1]
                print(
                    f"{r['side']:8s} seed {seed}: {r['env_steps_per_s']:6.0f} env steps/s "
                    f"({r['wall_s']:.1f} s), test return {r['test_return']:.2f}, "
                    f"peak {r['peak_mem_mb']:.0f} MB (trial's own processes "
                    f"{r['peak_trial_mem_mb']:.0f} MB)",
                    flush=True,
                )

    by_side: dict[str, list[dict]] = {}
    for r in rows:
        by_side.setdefault(r["side"], []).append(r)
    print(f"\n{'side':8s} {'env steps/s (median)':>21s} {'test return (mean +- std)':>27s} "
          f"{'peak MB (max)':>14s}")  # fmt: skip
    for side, rs in by_side.items():
        sps = statistics.median(r["env_steps_per_s"] for r in rs)
        peak = max(r["peak_mem_mb"] for r in rs)
        print(f"{side:8s} {sps:21.0f} {_mean_std([r['test_return'] for r in rs]):>27s} "
              f"{peak:14.0f}")  # fmt: skip
    if "epymarl" in by_side:
        pairs = zip(by_side["ours"], by_side["epymarl"], strict=True)
        ratios = [o["env_steps_per_s"] / e["env_steps_per_s"] for o, e in pairs]
        print(
            f"\nsteps/s ratio ours/EPyMARL: median {statistics.median(ratios):.2f}x "
            f"(per seed: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
