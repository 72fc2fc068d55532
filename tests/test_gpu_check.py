"""benchmarks/gpu_check.sh on a machine without CUDA (this one, and CI): it measures the
CPU side and exits 0; its agreement check, run on two CPU learners, finds them equal."""

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_gpu_check_falls_back_to_the_cpu_side(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--updates", "5", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no CUDA device: measured the CPU side only" in proc.stdout
    result = json.loads(out.read_text())
    assert result["cuda"] is False and result["cpu_updates_per_s"] > 0
    assert result["tolerance"] == 1e-3


def test_agreement_of_two_learners_from_the_same_weights_and_batch(ray_local):
    import gpu_check

    env, config = "stag_hunt", gpu_check.SMALL_STAG_HUNT
    first, second = gpu_check._algo(env, config, 0), gpu_check._algo(env, config, 0)
    try:
        # Other weights before the check, which copies the first learner's into the second.
        with torch.no_grad():
            for p in gpu_check._module(second.learner_group._learner).parameters():
                p.add_(1.0)
        result = gpu_check.agreement(first, second, gpu_check._batch(first))
        assert result["max_weight_change"] > 0
        assert result["max_cpu_gpu_diff"] == 0.0 and result["ratio"] == 0.0
    finally:
        first.stop()
        second.stop()
