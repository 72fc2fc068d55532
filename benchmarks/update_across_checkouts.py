"""The learner update's wall time on the code of several checkouts, side by side in one run:
did a change slow the update, or is it the machine? Each checkout (a `git worktree` of this
repository at some commit, or this one) runs in a fresh process that imports knife from it,
builds its own copy of `--config` (default benchmarks/configs/spread_qmix_epymarl.yaml, a
path relative to the checkout) with sampling in the driver, and times `LearnerGroup.update`
(RLlib's, the same in every checkout) over `--updates` updates after 50 of warm-up, and the
training env steps/s of the whole iterations over the same span (what the Algorithm does
around the update counts there); checkouts alternate, `--repeats` rounds.

    git worktree add /tmp/old a38c249
    python benchmarks/update_across_checkouts.py /tmp/old . [--updates 250] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from child_process import BUILD_PRELUDE, run_child  # benchmarks/ is on sys.path as a script

WARMUP = 50

ONE_CHECKOUT = (
    """
import sys, time, json
root, wanted, warmup, config = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# This checkout's knife, not the editable install's.
sys.meta_path = [f for f in sys.meta_path if "editable" not in str(f)]
sys.path.insert(0, root)
import knife
assert knife.__file__.startswith(root), knife.__file__
from ray.rllib.core.learner.learner_group import LearnerGroup

times = []
update = LearnerGroup.update

def timed(self, *args, **kwargs):
    start = time.perf_counter()
    out = update(self, *args, **kwargs)
    times.append(time.perf_counter() - start)
    return out

LearnerGroup.update = timed
"""
    + BUILD_PRELUDE
    + """
cfg = load_trial_config(f"{root}/{config}", ["training.num_env_runners=0", "steps=1000000"])
algo = build_algorithm(cfg)
start = None  # (seconds, env steps) at the end of the first iteration past the warm-up
while len(times) < wanted + warmup:
    algo.train()
    if start is None and len(times) >= warmup:
        start = (time.perf_counter(), algo.counters["env_steps"])
rate = (algo.counters["env_steps"] - start[1]) / (time.perf_counter() - start[0])
print(json.dumps({"updates": times[warmup:], "steps_per_s": rate}))
algo.stop()
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--updates", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="benchmarks/configs/spread_qmix_epymarl.yaml")
    args = parser.parse_args()
    roots = [str(c.resolve()) for c in args.checkouts]
    medians: dict[str, list[float]] = {r: [] for r in roots}
    rates: dict[str, list[float]] = {r: [] for r in roots}
    for _ in range(args.repeats):
        for root in roots:
            out = run_child(ONE_CHECKOUT, root, str(args.updates), str(WARMUP), args.config)
            medians[root].append(1e3 * statistics.median(out["updates"]))
            rates[root].append(out["steps_per_s"])
            print(
                f"{root}: median update {medians[root][-1]:.1f} ms, "
                f"{rates[root][-1]:.0f} env steps/s",
                flush=True,
            )
    print(f"\n{args.config}: medians over {args.repeats} alternating runs of each")
    base, base_rate = statistics.median(medians[roots[0]]), statistics.median(rates[roots[0]])
    for root in roots:
        ms, rate = statistics.median(medians[root]), statistics.median(rates[root])
        print(
            f"{root}: update {ms:.1f} ms ({', '.join(f'{m:.1f}' for m in medians[root])}), "
            f"{ms / base:.2f}x the first; {rate:.0f} env steps/s "
            f"({', '.join(f'{r:.0f}' for r in rates[root])}), {rate / base_rate:.2f}x the first"
        )


if __name__ == "__main__":
    main()
