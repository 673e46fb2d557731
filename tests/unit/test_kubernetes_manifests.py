"""deploy/kubernetes: every manifest against the Kubernetes API schemas (offline, strict), and the
pod spec's promises checked against the appliance itself (its config compiles, its routes, its
metrics, its image's user). `podman kube play` runs them: tests/container/test_kube_play.py."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from appliance.compile.compiler import compile_file
from appliance.env import EmbedEnv
from appliance.gateway.metrics import GatewayMetrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted((DEPLOY / "manifests").glob("*.yaml"))
ADAPTER_RULES = DEPLOY / "prometheus-adapter" / "rules.yaml"
K8S_VERSION = "1.37.0"  # the newest release kubernetes-validate 1.37 ships schemas for
DRAIN_S = 30  # the gateway finishes in-flight requests for up to 30 s on SIGTERM (README, "Failures")
# Kubernetes quantities (resource.Quantity): a decimal with an optional SI / binary suffix.
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _one(kind: str) -> dict[str, Any]:
    found = [doc for path in MANIFESTS for doc in _docs(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec["containers"]
    return container


@pytest.mark.parametrize("path", [*MANIFESTS, ADAPTER_RULES], ids=lambda p: p.name)
def test_each_manifest_validates_strictly_against_the_api_schemas(path: Path) -> None:
    for doc in _docs(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_strict_validation_rejects_an_unknown_field() -> None:
    deployment = copy.deepcopy(_one("Deployment"))
    _container(deployment["spec"]["template"]["spec"])["readinesProbe"] = {"httpGet": {"path": "/ready", "port": 8080}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_applies_the_same_files_as_kubectl_apply_f() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = sorted(DEPLOY / r for r in kustomization["resources"])
    assert listed == MANIFESTS
    kinds = {doc["kind"] for path in MANIFESTS for doc in _docs(path)}
    assert kinds == {"ConfigMap", "Secret", "PersistentVolumeClaim", "Job", "Deployment", "Service",
                     "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    images = {image["name"] for image in kustomization["images"]}
    used = {c["image"] for kind in ("Deployment", "Job") for c in _pod(kind)["containers"]}
    assert used == images, "kustomization `images` must rename every image the manifests use"


def _pod(kind: str) -> dict[str, Any]:
    pod: dict[str, Any] = _one(kind)["spec"]["template"]["spec"]
    return pod


def _embed_toml() -> str:
    text: str = _one("ConfigMap")["data"]["embed.toml"]
    return text


def test_the_configmap_embed_toml_compiles_with_the_secret_s_keys(
    tmp_path: Path, tiny_jina_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tomllib.loads(_embed_toml())
    secret_keys = set(_one("Secret")["stringData"])
    env_from_secret = {
        e["name"] for e in _container(_pod("Deployment"))["env"]
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == _one("Secret")["metadata"]["name"]
    }
    for key in spec["auth"]["keys"]:
        assert key["env"] in secret_keys and key["env"] in env_from_secret, key
        monkeypatch.setenv(key["env"], "sk-from-the-secret")
    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "embed.toml"
    config.write_text(_embed_toml())
    models = tmp_path / "models"
    models.mkdir()
    (models / spec["models"][0]["path"]).symlink_to(tiny_jina_dir)  # where the PVC mounts it
    compiled = compile_file(config, tmp_path / "out", env=EmbedEnv(model_root=models, cache_dir=tmp_path / "cache"))
    assert [m.name for m in compiled.gateway.models] == ["jina-embeddings-v3"]


def test_the_pod_spec_matches_the_appliance() -> None:
    spec = tomllib.loads(_embed_toml())
    pod = _pod("Deployment")
    container = _container(pod)
    resources = container["resources"]
    # Guaranteed QoS, and the CPU limit is what the threads follow ([instances] threads = 0).
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert spec["instances"]["threads"] == 0
    for value in [*resources["requests"].values(), *resources["limits"].values()]:
        assert QUANTITY.match(str(value)), value
    (port,) = container["ports"]
    assert port["containerPort"] == spec["server"]["port"] == 8080
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["containerPort"], probe
    # The grace period covers the preStop sleep and the gateway's drain.
    (sleep,) = [int(a) for a in container["lifecycle"]["preStop"]["exec"]["command"][1:]]
    assert pod["terminationGracePeriodSeconds"] > sleep + DRAIN_S
    assert _one("Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # Non-root as the image's user, read-only root, /dev/shm memory-backed.
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Containerfile").read_text(), re.MULTILINE)
    assert user is not None
    assert pod["securityContext"]["runAsUser"] == int(user[1]) and pod["securityContext"]["runAsGroup"] == int(user[2])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert mounts["/models"]["readOnly"] is True
    assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["readOnly"] is True
    # The download Job writes where the replicas read.
    job_pod = _pod("Job")
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert {v["persistentVolumeClaim"]["claimName"] for v in job_pod["volumes"] if "persistentVolumeClaim" in v} == {claim}
    assert _one("PersistentVolumeClaim")["metadata"]["name"] == claim
    assert f"/models/{spec['models'][0]['path']}" in _container(job_pod)["args"]


def test_the_service_pdb_and_hpa_point_at_the_deployment() -> None:
    deployment = _one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _one("Service")["spec"]["selector"].items() <= labels.items()
    assert _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_the_hpa_metric_is_the_adapter_rule_over_a_series_the_gateway_exports() -> None:
    hpa = _one("HorizontalPodAutoscaler")["spec"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert QUANTITY.match(metric["pods"]["target"]["averageValue"])
    (rules_doc,) = _docs(ADAPTER_RULES)
    (rule,) = yaml.safe_load(rules_doc["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    series = re.match(r"^(\w+)\{", rule["seriesQuery"])
    assert series is not None
    families = list(GatewayMetrics(None).registry.collect())  # labelled series have no samples yet
    suffixes = {"histogram": ("_sum", "_count", "_bucket"), "counter": ("_total",)}
    exported = {f.name + s for f in families for s in suffixes.get(f.type, ("",))}
    assert series[1] in exported
    assert re.fullmatch(rule["name"]["matches"], series[1])
