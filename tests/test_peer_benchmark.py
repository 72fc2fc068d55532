"""benchmarks/peer_throughput.py: its config matches EPyMARL's QMIX settings and our side runs
end to end at both cadences (EPyMARL and JaxMARL are not installed here: their sides are
skipped)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from knife.platform.config import load_trial_config

ROOT = Path(__file__).resolve().parents[1]


def test_peer_config_has_epymarl_qmix_settings():
    cfg = load_trial_config(ROOT / "benchmarks" / "configs" / "spread_qmix_epymarl.yaml")
    t = cfg.training
    assert (cfg.env, cfg.env_config["N"], cfg.env_config["max_cycles"]) == (
        "pettingzoo:mpe2.simple_spread_v3",
        3,
        25,
    )
    assert (t.batch_size, t.buffer_size, t.lr, t.optimizer) == (32, 5000, 5e-4, "adam")
    assert (t.td_lambda, t.double_q, t.target_update_interval) == (0.0, True, 200)
    assert (t.epsilon_start, t.epsilon_finish, t.epsilon_anneal_steps) == (1.0, 0.05, 50_000)
    assert (t.standardise_rewards, t.obs_last_action, t.updates_per_episode) == (True, False, 1.0)
    assert (t.mixer_embed_dim, t.agent_hidden_dim) == (32, 64)


@pytest.mark.e2e
def test_peer_benchmark_runs_our_sides_without_the_peers(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/peer_throughput.py", "--steps", "1000", "--seeds", "0",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No checkout given for epymarl, epymarl-parallel, jaxmarl" in proc.stdout
    rows = json.loads(out.read_text())
    assert [r["side"] for r in rows] == ["ours", "ours-parallel"]
    for row in rows:
        assert row["env_steps"] >= 1000
        assert row["env_steps_per_s"] > 0 and row["peak_mem_mb"] > 100
        # The trial's own processes (driver, EnvRunner actor) are part of the whole tree.
        assert 100 < row["peak_trial_mem_mb"] < row["peak_mem_mb"]
        assert -1000 < row["test_return"] < 0  # simple_spread returns are negative distances


def test_peer_benchmark_refuses_a_path_that_is_not_epymarl(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/peer_throughput.py", "--epymarl", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "not a checkout of EPyMARL" in proc.stderr
