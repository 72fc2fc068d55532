"""JaxMARL's jitted QMIX (baselines/QLearning/qmix_rnn.py) on CPU, at our cadence.

A peer side for benchmarks/peer_throughput.py: it times JaxMARL's own `make_train` on
MPE_simple_spread_v3 with settings matched to benchmarks/configs/spread_qmix_epymarl.yaml.
JaxMARL is not a dependency; run this with the Python of an environment that has
`jaxmarl[algs]==0.2.0` (CPU jax), pointing at a JaxMARL checkout:

    /path/to/jaxmarl-venv/bin/python benchmarks/jaxmarl_side.py \\
        --jaxmarl /path/to/JaxMARL --seed 0 --steps 50000

The config is config/config.yaml merged with config/alg/ql_rnn_mpe.yaml (read with pyyaml,
no hydra), then these keys are set:

  ENV_NAME MPE_simple_spread_v3, ENV_KWARGS {}   3 agents, 3 landmarks, its default horizon
  NUM_ENVS 1                 one env; each update collects exactly one episode
  NUM_EPOCHS 1               one gradient step per update, i.e. per episode
  BUFFER_BATCH_SIZE 32       episodes per batch (JaxMARL's buffer items are episodes)
  BUFFER_SIZE 5000           episodes (max_length_time_axis = BUFFER_SIZE // NUM_ENVS)
  LEARNING_STARTS 0          learning starts once the buffer holds 32 episodes (can_sample)
  HIDDEN_SIZE 64, MIXER_EMBEDDING_DIM 32, MIXER_HYPERNET_HIDDEN_DIM 64
  LR 5e-4, LR_LINEAR_DECAY False, MAX_GRAD_NORM 10, GAMMA 0.99
  TARGET_UPDATE_INTERVAL 200, TAU 1.0   hard target copy every 200 updates
  EPS_DECAY                  fraction of updates covering 50k of our env steps (2000 episodes)
  TEST_NUM_ENVS 100, TEST_NUM_STEPS 26  100 greedy test episodes ...
  TEST_INTERVAL              ... every 50k env steps (2000 updates; at the end if --steps <
                             50k), plus JaxMARL's test before training
  SEED --seed, NUM_SEEDS 1 (not vmapped), WANDB_MODE disabled, SAVE_PATH None

Step counting: JaxMARL counts NUM_STEPS * NUM_ENVS env steps per update. Its MPE episodes
last 26 steps (MAX_STEPS 25; done comes on the 26th step) and NUM_STEPS = 26 rolls out one
episode, of which the first 25 rewards enter its targets (the 26th step only bootstraps),
against our 25-step episodes. So we match episodes: episodes = steps // 25, TOTAL_TIMESTEPS =
26 * episodes (its NUM_UPDATES = episodes), and report env_steps = 25 * episodes; its own count
(26 per episode) is printed as jaxmarl_env_steps. Its returns cover 26 steps, ours 25.
Left as JaxMARL has them: RAdam (hard-coded), no reward standardisation, its agent-id
observation preprocessing.

wall_s is make_train + jit lowering + XLA compile + the run (jax.block_until_ready);
compile_s is the part before the run. test_return is the last greedy test's mean
returned_episode_returns, from the final runner state (MPELogWrapper logs each agent's reward
times 3; averaged over agents that is the return summed over agents, as EPyMARL reports it).
One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

EPISODE_STEPS = 25  # our MPE episodes
ROLLOUT_STEPS = 26  # JaxMARL's MPE episode length and NUM_STEPS
EPS_ANNEAL_STEPS = 50_000
TEST_EVERY_STEPS = 50_000


def build_config(jaxmarl: Path, seed: int, steps: int) -> dict[str, Any]:
    cfg_dir = jaxmarl / "baselines" / "QLearning" / "config"
    config: dict[str, Any] = yaml.safe_load((cfg_dir / "config.yaml").read_text())
    config.update(yaml.safe_load((cfg_dir / "alg" / "ql_rnn_mpe.yaml").read_text()))
    episodes = steps // EPISODE_STEPS
    test_every = min(TEST_EVERY_STEPS // EPISODE_STEPS, episodes)
    config.update(
        ENV_NAME="MPE_simple_spread_v3",
        ENV_KWARGS={},
        NUM_ENVS=1,
        NUM_STEPS=ROLLOUT_STEPS,
        TOTAL_TIMESTEPS=ROLLOUT_STEPS * episodes,
        NUM_EPOCHS=1,
        BUFFER_BATCH_SIZE=32,
        BUFFER_SIZE=5000,
        LEARNING_STARTS=0,
        HIDDEN_SIZE=64,
        MIXER_EMBEDDING_DIM=32,
        MIXER_HYPERNET_HIDDEN_DIM=64,
        LR=5e-4,
        LR_LINEAR_DECAY=False,
        MAX_GRAD_NORM=10,
        GAMMA=0.99,
        TARGET_UPDATE_INTERVAL=200,
        TAU=1.0,
        EPS_START=1.0,
        EPS_FINISH=0.05,
        EPS_DECAY=(EPS_ANNEAL_STEPS // EPISODE_STEPS) / episodes,
        TEST_DURING_TRAINING=True,
        TEST_NUM_ENVS=100,
        TEST_NUM_STEPS=ROLLOUT_STEPS,
        # make_train tests when n_updates % int(NUM_UPDATES * TEST_INTERVAL) == 0; the +0.5
        # keeps that int() at test_every despite float rounding
        TEST_INTERVAL=(test_every + 0.5) / episodes,
        SEED=seed,
        NUM_SEEDS=1,
        WANDB_MODE="disabled",
        SAVE_PATH=None,
    )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jaxmarl", type=Path, required=True, help="JaxMARL checkout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50_000)
    args = parser.parse_args()
    if args.steps < 32 * EPISODE_STEPS:
        parser.error(f"--steps must be at least {32 * EPISODE_STEPS}")

    sys.path.insert(0, str(args.jaxmarl / "baselines" / "QLearning"))
    import jax

    # jaxmarl prints on import and resets sys.stdout (mabrax), so move fd 1 to stderr for it
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        from qmix_rnn import env_from_config, make_train
    finally:
        sys.__stdout__.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)

    config = build_config(args.jaxmarl, args.seed, args.steps)
    env, _ = env_from_config(dict(config))
    rng = jax.random.PRNGKey(args.seed)

    start = time.perf_counter()
    train = make_train(config, env)
    compiled = jax.jit(train).lower(rng).compile()
    compiled_at = time.perf_counter()
    out = jax.block_until_ready(compiled(rng))
    end = time.perf_counter()

    # its scan stacks no metrics (they only go to wandb); the runner state holds
    # (train_state, buffer_state, last greedy test metrics, rng)
    train_state, _, test_metrics, _ = out["runner_state"]
    episodes = int(config["NUM_UPDATES"])
    env_steps = EPISODE_STEPS * episodes
    wall = end - start
    result = {
        "side": "jaxmarl",
        "seed": args.seed,
        "env_steps": env_steps,
        "jaxmarl_env_steps": int(train_state.timesteps),
        "grad_steps": int(train_state.grad_steps),
        "wall_s": round(wall, 3),
        "compile_s": round(compiled_at - start, 3),
        "run_s": round(end - compiled_at, 3),
        "steps_per_s": round(env_steps / wall, 1),
        "test_return": float(test_metrics["returned_episode_returns"]),
        "return_kind": "greedy_test",
        "jax": jax.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
