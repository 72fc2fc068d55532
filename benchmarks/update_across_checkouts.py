"""The learner update's wall time on the code of several checkouts, side by side in one run:
did a change slow the update, or is it the machine? Each checkout (a `git worktree` of this
repository at some commit, or this one) runs in a fresh process that imports knife from it,
builds its own benchmarks/configs/spread_qmix_epymarl.yaml with sampling in the driver, and
times `LearnerGroup.update` (RLlib's, the same in every checkout) over `--updates` updates
after 50 of warm-up; checkouts alternate, `--repeats` rounds.

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
root, wanted, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
config = f"{root}/benchmarks/configs/spread_qmix_epymarl.yaml"
cfg = load_trial_config(config, ["training.num_env_runners=0", "steps=1000000"])
algo = build_algorithm(cfg)
while len(times) < wanted + warmup:
    algo.train()
print(json.dumps(times[warmup:]))
algo.stop()
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--updates", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    roots = [str(c.resolve()) for c in args.checkouts]
    medians: dict[str, list[float]] = {r: [] for r in roots}
    for _ in range(args.repeats):
        for root in roots:
            times = run_child(ONE_CHECKOUT, root, str(args.updates), str(WARMUP))
            medians[root].append(1e3 * statistics.median(times))
            print(f"{root}: median update {medians[root][-1]:.1f} ms", flush=True)
    print(f"\nmedian over {args.repeats} alternating runs of each run's median update")
    base = statistics.median(medians[roots[0]])
    for root, ms in medians.items():
        per_run = ", ".join(f"{m:.1f}" for m in ms)
        med = statistics.median(ms)
        print(f"{root}: {med:.1f} ms ({per_run}); {med / base:.2f}x the first")


if __name__ == "__main__":
    main()
