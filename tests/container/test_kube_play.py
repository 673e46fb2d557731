"""deploy/kubernetes's Deployment, ConfigMap and Secret, run by `podman kube play` (Debian's 4.3.1).

Played as written but for what a one-machine test needs or podman 4.3 cannot do:
- the image is the one these tests build, the PVC volume a hostPath holding the tiny model (what
  the download Job leaves), and the gateway's port published on 127.0.0.1 at a port chosen at run
  time (hostPort);
- one replica (kube play runs one pod per Deployment);
- the Secret goes in as a podman secret holding its `data` map, the format podman 4.3's
  secretKeyRef reads (its own handling of a played Secret stores YAML and then fails to parse it as
  JSON, containers/podman#17071); the pod then gets the key through `env` as on Kubernetes;
- the memory-backed `/dev/shm` emptyDir is left out: podman 4.3 makes every emptyDir an on-disk
  volume owned by root, where Triton's Python backend (uid 10001) may not create its shared-memory
  region, whereas Kubernetes mounts a memory-backed emptyDir as tmpfs, writable by all. Podman's own
  /dev/shm (a 64 MB tmpfs) stands in.
Everything else is the manifest's: embed.toml from the ConfigMap, resources (the CPU limit sets
the model's threads), the security context with a read-only root, the writable emptyDirs, the
liveness probe as podman's healthcheck.

What `kube play` does not emulate, so this test cannot show: replicas, readiness and startup
gating (it honours only livenessProbe), Services, the HPA, the PodDisruptionBudget, the Job and
the PVC it fills. Those are checked offline against the API schemas in
tests/unit/test_kubernetes_manifests.py.
"""

from __future__ import annotations

import base64
import copy
import json
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from harness.reference import Reference
from harness.stack import free_port
from tests.container.conftest import Podman

pytestmark = pytest.mark.container

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "manifests"
READY_DEADLINE_S = 180.0
DOWN_LIMIT_S = 60.0  # the manifest's grace period is 75 s; supervisord stops in well under 10 s


def _doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((MANIFESTS / name).read_text())
    return doc


@dataclass
class Played:
    file: Path
    pod: str
    container: str
    base_url: str
    api_key: str
    model_dir: Path


def _as_played(deployment: dict[str, Any], image: str, models: Path, port: int) -> dict[str, Any]:
    """The Deployment with the changes the module's docstring lists, and nothing else."""
    played = copy.deepcopy(deployment)
    played["spec"]["replicas"] = 1
    pod = played["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    (http,) = container["ports"]
    http.update(hostPort=port, hostIP="127.0.0.1")
    (claim,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    del claim["persistentVolumeClaim"]
    claim["hostPath"] = {"path": str(models), "type": "Directory"}
    shm = [v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in shm]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] not in shm]
    return played


def _podman_secret(secret: dict[str, Any]) -> str:
    """The Secret's data as podman 4.3's secretKeyRef reads it: JSON, key -> base64 value."""
    data = dict(secret.get("data") or {})
    data.update({k: base64.b64encode(v.encode()).decode() for k, v in (secret.get("stringData") or {}).items()})
    return json.dumps(data)


@pytest.fixture(scope="module")
def played(podman: Podman, image: str, tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Played]:
    root = tmp_path_factory.mktemp("kube-play")
    configmap, secret, deployment = _doc("configmap.yaml"), _doc("secret.yaml"), _doc("deployment.yaml")
    models = root / "models"
    model_path = _model_path(configmap)
    (models / model_path).mkdir(parents=True)
    for f in tiny_jina_dir.iterdir():
        (models / model_path / f.name).write_bytes(f.read_bytes())
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's uid 10001
    port = free_port()
    file = root / "kube.yaml"
    file.write_text(yaml.safe_dump_all([configmap, _as_played(deployment, image, models, port)]))
    (root / "secret.json").write_text(_podman_secret(secret))
    pod = f"{deployment['metadata']['name']}-pod-0"  # kube play's names: <deployment>-pod-0, <pod>-<container>
    container = f"{pod}-{deployment['spec']['template']['spec']['containers'][0]['name']}"
    secret_name, volume = secret["metadata"]["name"], configmap["metadata"]["name"]

    def clean_up() -> None:
        podman.run("pod", "rm", "--force", pod, check=False, timeout=120)
        podman.run("secret", "rm", secret_name, check=False)
        podman.run("volume", "rm", "--force", volume, check=False)  # kube play keeps a ConfigMap's volume

    clean_up()
    podman.run("secret", "create", secret_name, str(root / "secret.json"))
    base_url = f"http://127.0.0.1:{port}"
    try:
        podman.run("kube", "play", str(file), timeout=180)
        _wait_ready(podman, container, base_url)
        yield Played(file=file, pod=pod, container=container, base_url=base_url,
                     api_key=secret["stringData"]["EMBED_API_KEY"], model_dir=models / model_path)
    finally:
        clean_up()


def _model_path(configmap: dict[str, Any]) -> str:
    path: str = tomllib.loads(configmap["data"]["embed.toml"])["models"][0]["path"]
    return path


def _wait_ready(podman: Podman, container: str, base_url: str) -> None:
    start = time.monotonic()
    while time.monotonic() - start < READY_DEADLINE_S:
        state = podman.run("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state not in ("running", "created", "configured"):
            pytest.fail(f"container {state} before /ready:\n{podman.run('logs', container, check=False).stderr[-4000:]}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)  # poll interval
    pytest.fail(f"not ready after {READY_DEADLINE_S} s:\n{podman.run('logs', container, check=False).stderr[-4000:]}")


def test_the_pod_serves_an_embedding_with_the_key_from_the_secret(played: Played) -> None:
    response = httpx.post(f"{played.base_url}/v1/embeddings", timeout=30,
                          headers={"Authorization": f"Bearer {played.api_key}"},
                          json={"model": "jina-embeddings-v3", "input": "Kubernetes, played by podman"})
    assert response.status_code == 200, response.text
    vector = np.array(response.json()["data"][0]["embedding"])
    expected = Reference(played.model_dir).embed("Kubernetes, played by podman", "retrieval.query")
    assert float(vector @ expected) >= 0.9999  # fp32 or bf16, whichever `auto` chose on this CPU
    wrong = httpx.post(f"{played.base_url}/v1/embeddings", timeout=30, headers={"Authorization": "Bearer sk-wrong"},
                       json={"model": "jina-embeddings-v3", "input": "x"})
    assert wrong.status_code == 401


def test_the_pod_runs_as_the_manifest_says(podman: Podman, played: Played) -> None:
    users = podman.run("top", played.container, "user", "comm").stdout.splitlines()[1:]
    assert users and all(line.split()[0] in ("embed", "10001") for line in users), users
    # read-only root filesystem; the emptyDirs and the memory-backed /dev/shm are writable
    probe = ("awk '$2 == \"/\" {print \"root\", $4}' /proc/mounts; "
             "for d in /var/lib/embed /tmp /dev/shm; do touch $d/x && rm $d/x || echo $d read-only; done; "
             "awk '$2 == \"/dev/shm\" {print \"shm\", $3}' /proc/mounts")
    out = podman.run("exec", played.container, "sh", "-c", probe).stdout
    assert "root ro," in out, out
    assert "read-only" not in out, out
    assert "shm tmpfs" in out, out
    # the CPU limit reaches the model's threads through cgroup cpu.max
    info = httpx.get(f"{played.base_url}/info", headers={"Authorization": f"Bearer {played.api_key}"}, timeout=10)
    cpus = int(_doc("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert info.json()["threads_per_instance"] == cpus, info.json()


def test_the_liveness_probe_becomes_the_containers_healthcheck_on_the_health_endpoint(
    podman: Podman, played: Played
) -> None:
    # podman runs an httpGet probe as `curl -f http://localhost:PORT/PATH` inside the container; the
    # image has no curl (on purpose, tests/container/test_container.py), so podman's check itself
    # cannot pass here. The kubelet probes from outside the container: so does this test.
    check = json.loads(podman.run("inspect", "--format", "{{json .Config.Healthcheck}}", played.container).stdout)
    probe = _doc("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert f"http://localhost:{probe['httpGet']['port']}{probe['httpGet']['path']}" in check["Test"], check
    assert check["Interval"] == probe["periodSeconds"] * 10**9 and check["Retries"] == probe["failureThreshold"]
    assert httpx.get(f"{played.base_url}{probe['httpGet']['path']}", timeout=5).status_code == 200


def test_kube_down_stops_the_pod_cleanly(podman: Podman, played: Played) -> None:
    # Last in the module: it stops the shared pod.
    start = time.monotonic()
    podman.run("kube", "down", str(played.file), timeout=120)
    took = time.monotonic() - start
    podman.measured(f"podman kube down took {took:.1f} s")
    assert took < DOWN_LIMIT_S
    assert podman.run("pod", "exists", played.pod, check=False).returncode != 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{played.base_url}/health", timeout=2)
