#!/usr/bin/env bash
# The GPU path in one run under 5 minutes (issue 15): CUDA-vs-CPU agreement of one learner
# update, learner updates/s on both, K trials sharing one GPU, peak GPU memory.
# Without CUDA it measures the CPU side and exits 0 (CI runs it so).
#   bash benchmarks/gpu_check.sh [--trials 4] [--json gpu_check.json]
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 300 python benchmarks/gpu_check.py "$@"
