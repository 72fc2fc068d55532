"""What RLlib's seeding costs an EnvRunner actor: torch.use_deterministic_algorithms imports
torch._inductor (knife.policies.torch_threads skips that import). Side by side in one run,
alternating: a fresh process builds the peer config's Algorithm (benchmarks/configs/
spread_qmix_epymarl.yaml: the driver's Learner and one EnvRunner actor) with the skip and
with torch's own call (KNIFE_KEEP_INDUCTOR_IMPORT=1), trains 3 iterations, and reports the
build's wall time and each process's RSS and PSS (shared pages split among the processes
that map them).

    python benchmarks/build_time.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from child_process import BUILD_PRELUDE, run_child  # benchmarks/ is on sys.path as a script

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "configs" / "spread_qmix_epymarl.yaml"

ONE_BUILD = (
    BUILD_PRELUDE
    + f"""
import json, time
cfg = load_trial_config({str(CONFIG)!r})
start = time.perf_counter()
algo = build_algorithm(cfg)
build_s = time.perf_counter() - start
for _ in range(3):
    algo.train()

def memory(_):
    import sys, psutil
    info = psutil.Process().memory_full_info()
    return info.rss / 1e6, info.pss / 1e6, "torch._inductor" in sys.modules

(runner,) = algo.env_runner_group.foreach_env_runner(memory, local_env_runner=False)
driver = memory(None)
print(json.dumps({{"build_s": build_s, "driver": driver, "runner": runner}}))
algo.stop()
ray.shutdown()
"""
)


def one(keep_import: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KNIFE_KEEP_INDUCTOR_IMPORT"}
    if keep_import:
        env["KNIFE_KEEP_INDUCTOR_IMPORT"] = "1"
    return run_child(ONE_BUILD, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {"skip": [], "torch": []}
    for _ in range(args.repeats):
        for side in rows:  # alternating: the machine's drift hits both sides alike
            rows[side].append(one(keep_import=side == "torch"))
            print(side, json.dumps(rows[side][-1]), flush=True)
    med = {
        side: {
            "build_s": statistics.median(r["build_s"] for r in rs),
            "driver_rss": statistics.median(r["driver"][0] for r in rs),
            "driver_pss": statistics.median(r["driver"][1] for r in rs),
            "runner_rss": statistics.median(r["runner"][0] for r in rs),
            "runner_pss": statistics.median(r["runner"][1] for r in rs),
            "runner_inductor": rs[0]["runner"][2],
        }
        for side, rs in rows.items()
    }
    print(f"\nmedians of {args.repeats} alternating builds (MB; after 3 iterations)")
    print("side   build s  driver RSS  driver PSS  runner RSS  runner PSS  runner imports inductor")
    for side, m in med.items():
        print(
            f"{side:6} {m['build_s']:7.2f}  {m['driver_rss']:10.0f}  {m['driver_pss']:10.0f}"
            f"  {m['runner_rss']:10.0f}  {m['runner_pss']:10.0f}  {m['runner_inductor']}"
        )
    s, t = med["skip"], med["torch"]
    print(
        f"skip / torch: build time {s['build_s'] / t['build_s']:.2f}x, runner RSS "
        f"{s['runner_rss'] - t['runner_rss']:+.0f} MB, driver + runner RSS "
        f"{s['driver_rss'] + s['runner_rss']:.0f} vs {t['driver_rss'] + t['runner_rss']:.0f} MB"
    )


if __name__ == "__main__":
    main()
