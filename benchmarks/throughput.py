"""Throughput of QMIX on the default stag hunt (8 agents, 200-step episodes).

Measured side by side in one run (these machines are noisy):
  rllib-0   QMix Algorithm, local TeamEnvRunner (no remote EnvRunner)
  rllib-1   QMix Algorithm, 1 remote TeamEnvRunner (a Ray actor)
  plain     a single-process loop with the same RLModule, env, replay buffer and loss,
            without RLlib's Algorithm, EnvRunners or Learner
Each run collects the same number of episodes with one learner update (batch 32 whole
episodes) per episode once 32 episodes are in the buffer. Reported: training env steps/s,
learner updates/s, peak memory (RSS summed over the driver and all Ray worker processes),
and the time per env step relative to the plain loop.

    python benchmarks/throughput.py [--episodes 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import psutil
import ray
import torch

from knife.envs import make
from knife.policies import QMixConfig, result_metrics
from knife.policies.env_runner import play_episode
from knife.policies.learner import qmix_td_loss
from knife.policies.replay_buffer import EpisodeReplayBuffer
from knife.policies.rl_module import QMixRLModule
from knife.policies.schema import model_config

ENV = "stag_hunt"
TRAINING = dict(
    algorithm="qmix",
    lr=1e-3,
    batch_size=32,
    learning_starts=32,
    buffer_size=5000,
    target_update_interval=200,
    epsilon_anneal_steps=100_000,
    test_interval=10**9,
    test_episodes=1,
)


# Ray's own worker processes (per machine, not per trial), by their process titles.
RAY_OWN_WORKERS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


class PeakMemory:
    """Samples the RSS of a process (default: this one) plus all its descendants (the
    embedded Ray started there: raylet, GCS, workers); other Ray sessions on the machine are
    not counted. `peak` is the whole tree's; `peak_trial` counts only the trial's own
    processes, the root (driver, Learner), its Ray actors (EnvRunners: a worker whose
    title is `ray::<class>`) and any other child (a peer's env processes), leaving out
    Ray's own processes (GCS, raylet, dashboard, agents, idle workers), which a machine runs
    once whatever the number of trials."""

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        self.peak = self.peak_trial = 0
        self._pid, self._interval = pid, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _is_trial(p: psutil.Process, root: psutil.Process) -> bool:
        if p.pid == root.pid:
            return True
        try:
            cmdline = p.cmdline() or [""]
        except psutil.Error:
            return False
        if cmdline[0].startswith("ray::"):  # a Ray worker: an actor of the trial or Ray's own
            return cmdline[0].split(".")[0] not in RAY_OWN_WORKERS
        # Ray's daemons (GCS, raylet, dashboard, monitors) run binaries and scripts from the
        # ray package; any other child (a peer's env worker processes) belongs to the trial.
        return not any("/ray/" in part for part in cmdline)

    def _rss(self) -> tuple[int, int]:
        try:
            me = psutil.Process(self._pid)
            procs = [me, *me.children(recursive=True)]
        except psutil.Error:  # the process has ended
            return 0, 0
        seen, total, trial = set(), 0, 0
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            trial += rss if self._is_trial(p, me) else 0
        return total, trial

    def _sample(self) -> None:
        total, trial = self._rss()
        self.peak, self.peak_trial = max(self.peak, total), max(self.peak_trial, trial)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self._interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_rllib(episodes: int, runners: int) -> dict:
    cfg = (
        QMixConfig()
        .environment(env=ENV)
        .training(**TRAINING)
        .env_runners(num_env_runners=runners)
        .debugging(seed=0)
    )
    # As `knife train` runs it: one Algorithm.train() result per ~1000 env steps.
    cfg.min_sample_timesteps_per_iteration = 1000
    with PeakMemory() as mem:
        algo = cfg.build_algo()
        # Start-up, first test and filling the buffer to learning_starts: not timed.
        m0 = result_metrics(algo.train())
        while m0["learner_updates"] < 1:
            m0 = result_metrics(algo.train())
        start = time.perf_counter()
        m = m0
        while m["episodes"] < m0["episodes"] + episodes:
            m = result_metrics(algo.train())
        wall = time.perf_counter() - start
        algo.stop()
    steps = m["env_steps"] - m0["env_steps"]
    updates = m["learner_updates"] - m0["learner_updates"]
    return _row(f"rllib-{runners}", steps, updates, wall, mem.peak)


def run_plain(episodes: int) -> dict:
    torch.manual_seed(0)
    env = make(ENV)
    team = env.team
    obs_space, act_space = env.observation_space, env.action_space
    cfg = SimpleNamespace(gamma=0.99, td_lambda=0.6, double_q=True)
    module = QMixRLModule(
        observation_space=obs_space,
        action_space=act_space,
        inference_only=False,
        model_config=model_config(algorithm="qmix", epsilon_anneal_steps=100_000),
    )
    module.make_target_networks()
    optim = torch.optim.Adam(
        [p for n, p in module.named_parameters() if not n.startswith("target_")], lr=1e-3
    )
    buffer = EpisodeReplayBuffer(
        5000, team.episode_limit, team.n_agents, team.obs_dim, team.state_dim, team.n_actions
    )
    rng = np.random.default_rng(0)
    steps = updates = 0
    env.reset(seed=0)

    def one_episode(t):
        # The same episode loop TeamEnvRunner uses, called directly: no EnvRunner, no Ray.
        ep = play_episode(env, module, explore=True, t0=t)
        buffer.add(ep)
        return ep.length

    with PeakMemory() as mem:
        for _ in range(33):  # fill to learning_starts + the untimed first episode
            steps += one_episode(steps)
        start = time.perf_counter()
        timed_steps = 0
        for _ in range(episodes):
            n = one_episode(steps)
            steps += n
            timed_steps += n
            batch = {k: torch.from_numpy(v) for k, v in buffer.sample(32, rng).items()}
            q = module.agent_q_sequence(module.agent, batch)
            loss, _ = qmix_td_loss(module, batch, q, batch["reward"], cfg)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(optim.param_groups[0]["params"], 10.0)
            optim.step()
            updates += 1
            if updates % 200 == 0:
                module.target_agent.load_state_dict(module.agent.state_dict())
                module.target_mixer.load_state_dict(module.mixer.state_dict())
        wall = time.perf_counter() - start
    return _row("plain", timed_steps, updates, wall, mem.peak)


def _row(name, steps, updates, wall, peak) -> dict:
    return {
        "path": name,
        "env_steps_per_s": steps / wall,
        "updates_per_s": updates / wall,
        "ms_per_env_step": 1000 * wall / steps,
        "peak_mem_mb": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    for _ in range(args.repeats):  # interleaved, so drift hits every path alike
        rows.append(run_plain(args.episodes))
        rows.append(run_rllib(args.episodes, 0))
        rows.append(run_rllib(args.episodes, 1))
    ray.shutdown()
    by_path: dict[str, list[dict]] = {}
    for r in rows:
        by_path.setdefault(r["path"], []).append(r)
    plain_ms = np.median([r["ms_per_env_step"] for r in by_path["plain"]])
    print(
        f"{'path':10s} {'env steps/s':>12s} {'updates/s':>10s} {'ms/step':>8s} "
        f"{'x plain':>8s} {'peak MB':>8s}"
    )
    summary = []
    for path, rs in by_path.items():
        med = {k: float(np.median([r[k] for r in rs])) for k in rs[0] if k != "path"}
        med["path"], med["time_ratio_vs_plain"] = path, med["ms_per_env_step"] / plain_ms
        summary.append(med)
        print(
            f"{path:10s} {med['env_steps_per_s']:12.0f} {med['updates_per_s']:10.2f} "
            f"{med['ms_per_env_step']:8.3f} {med['time_ratio_vs_plain']:8.2f} "
            f"{med['peak_mem_mb']:8.0f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "median": summary}, f, indent=2)


if __name__ == "__main__":
    main()
