"""The container, built and run with real podman: what a user does with the README's commands.

On a fresh machine `scripts/podman-setup.sh` installs podman (../shared/podman.md) and builds the
debootstrapped bookworm base once; podman's layer cache makes later builds fast. The image is
started with `--network host` (every port on 127.0.0.1, chosen at run time), a mounted embed.toml
that takes its API key from the environment, and the tiny jina model mounted read-only where the
repository's embed.toml expects it (/models/model_repository/jina-embeddings-v3/1).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import AuthenticationError, OpenAI

from appliance.models.engines import cpu_capabilities
from harness.fakehub import REPO as REPO_ID
from harness.fakehub import serve_fake_hub
from harness.reference import Reference
from harness.stack import ports_toml
from tests.container.conftest import Podman

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
MODEL_PATH = "model_repository/jina-embeddings-v3/1"  # as in the repository's embed.toml
MODEL_NAME = "jina-embeddings-v3"
API_KEY_VAR = "EMBED_CONTAINER_KEY"
API_KEY = "sk-container-test-7d1e"
READY_DEADLINE_S = 180.0
STOP_LIMIT_S = 10.0


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Path:
    """model_repository/jina-embeddings-v3/1 with the tiny model, readable by the image's uid 10001."""
    root = tmp_path_factory.mktemp("container")
    shutil.copytree(tiny_jina_dir, root / MODEL_PATH)
    (root / "model_repository" / "empty" / "1").mkdir(parents=True)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def _write_toml(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(0o644)
    return path


def _run_args(config: Path, mounts: Path) -> list[str]:
    return ["--network", "host",
            "-v", f"{config}:/etc/embed/embed.toml:ro",
            "-v", f"{mounts / 'model_repository'}:/models/model_repository:ro"]


@dataclass
class Running:
    name: str
    base_url: str
    triton_ports: list[int]
    ready_after_s: float


@pytest.fixture(scope="module")
def running(podman: Podman, image: str, mounts: Path) -> Iterator[Running]:
    server = ports_toml()
    config = _write_toml(mounts, "embed.toml", server + (
        f'[[models]]\nname = "{MODEL_NAME}"\npath = "{MODEL_PATH}"\n'
        f'[auth]\nkeys = [{{ name = "test", env = "{API_KEY_VAR}" }}]\n'
    ))
    values = dict(line.split(" = ") for line in server.splitlines()[1:])
    name = f"embed-container-test-{os.getpid()}"
    base_url = f"http://127.0.0.1:{values['port']}"
    podman.run("rm", "-f", name, check=False)
    podman.run("run", "-d", "--name", name, "-e", f"{API_KEY_VAR}={API_KEY}", *_run_args(config, mounts), image)
    try:
        ready_after_s = _wait_ready(podman, name, base_url)
        podman.measured(f"/ready after {ready_after_s:.1f} s")
        triton_ports = [int(values[k]) for k in ("triton_http_port", "triton_grpc_port", "triton_metrics_port")]
        yield Running(name=name, base_url=base_url, triton_ports=triton_ports, ready_after_s=ready_after_s)
    finally:
        podman.run("rm", "-f", name, check=False)


def _wait_ready(podman: Podman, name: str, base_url: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < READY_DEADLINE_S:
        state = podman.run("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            pytest.fail(f"container {state} before /ready:\n{podman.run('logs', name).stderr[-4000:]}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.25)  # poll interval
    pytest.fail(f"not ready after {READY_DEADLINE_S} s:\n{podman.run('logs', name).stderr[-4000:]}")


def test_embeddings_through_the_openai_client_match_a_reference(running: Running, tiny_jina_dir: Path) -> None:
    """The image serves with the default engine and precision (`auto`): bf16 on OpenVINO where the
    CPU runs bf16 natively (then within the fidelity gate's cosine), else fp32 (then within 1e-4)."""
    info = httpx.get(f"{running.base_url}/info", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10).json()
    engine = info["models"][0]["engine"]
    client = OpenAI(base_url=f"{running.base_url}/v1", api_key=API_KEY, max_retries=0)
    texts = ["The cat sits on the mat.", "Ein Hund läuft im Park."]
    response = client.embeddings.create(model=MODEL_NAME, input=texts, encoding_format="float")
    reference = Reference(tiny_jina_dir)
    for text, item in zip(texts, response.data, strict=True):
        expected = reference.embed(text, "retrieval.query")  # the default task
        if engine["precision"] == "bf16":
            assert float(np.array(item.embedding) @ expected) >= engine["fidelity"]["threshold"]
        else:
            np.testing.assert_allclose(np.array(item.embedding), expected, atol=1e-4)
    assert response.model == MODEL_NAME
    expected_engine = ("openvino", "bf16") if "BF16" in cpu_capabilities() else ("onnxruntime", "fp32")
    assert (engine["name"], engine["precision"]) == expected_engine, engine


def test_the_api_key_comes_from_the_environment_passed_to_podman_run(running: Running) -> None:
    client = OpenAI(base_url=f"{running.base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(AuthenticationError):
        client.embeddings.create(model=MODEL_NAME, input="hello")


def test_the_docs_page_and_its_assets_are_in_the_image(running: Running) -> None:
    page = httpx.get(f"{running.base_url}/docs", timeout=10)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = httpx.get(f"{running.base_url}/docs/static/{asset}", timeout=10)
        assert response.status_code == 200 and len(response.content) > 100_000, asset


def test_healthcheck_reports_healthy(podman: Podman, running: Running) -> None:
    result = podman.run("healthcheck", "run", running.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_process_runs_as_the_unprivileged_user(podman: Podman, running: Running) -> None:
    users = podman.run("top", running.name, "user", "comm").stdout.splitlines()[1:]
    assert users and all(line.split()[0] == "embed" for line in users), users


def test_only_the_gateway_listens_beyond_loopback(running: Running) -> None:
    # --network host: the container's sockets are the host's. Triton must listen on 127.0.0.1 only.
    listening = _listening_tcp()
    for port in running.triton_ports:
        assert listening.get(port), f"nothing listens on Triton's port {port}"
        assert listening[port] <= LOOPBACK, (port, listening[port])


# /proc/net/tcp{,6} spellings of 127.0.0.1, ::ffff:127.0.0.1 (gRPC's dual-stack socket) and ::1
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _listening_tcp() -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A":  # LISTEN
                found.setdefault(int(port, 16), set()).add(address)
    return found


def test_image_exposes_only_the_gateway_port_and_keeps_no_ca_bundle_of_the_build(podman: Podman, image: str) -> None:
    config = json.loads(podman.run("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert list(config["ExposedPorts"]) == ["8080/tcp"]
    assert config["User"] == "10001:10001"
    health = json.loads(podman.run("image", "inspect", "--format", "{{json .HealthCheck}}", image).stdout)
    assert health["Test"][-1] == "/usr/local/bin/embed-healthcheck"  # kept: built with --format docker
    assert not [e for e in config["Env"] if e.startswith(("PIP_CERT", "SSL_CERT", "REQUESTS_CA"))]
    # The CA bundle handed to the build as a secret is in no file of the image (found by exact size).
    bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
    same_size = podman.run("run", "--rm", "--user", "0", "--entrypoint", "sh", image, "-c",
                           f"find / -xdev -type f -size {len(bundle)}c -exec sha256sum {{}} +").stdout
    assert hashlib.sha256(bundle).hexdigest() not in same_size
    # no secret left behind, and no compiler or curl in the final stage
    leftovers = podman.run("run", "--rm", "--entrypoint", "sh", image, "-c",
                           "ls -A /run/secrets 2>/dev/null; command -v gcc cc c++ make curl || true").stdout
    assert leftovers == ""


def test_the_repository_embed_toml_works_unchanged_with_the_documented_mount(
    podman: Podman, image: str, mounts: Path
) -> None:
    result = podman.run("run", "--rm", *_run_args(REPO / "embed.toml", mounts), image,
                        "compile", "--config", "/etc/embed/embed.toml", "--out", "/tmp/compiled", check=False)
    assert result.returncode == 0, result.stderr
    assert f"compiled {MODEL_NAME} into /tmp/compiled" in result.stdout


def test_verify_runs_inside_the_image(podman: Podman, image: str, mounts: Path) -> None:
    result = podman.run("run", "--rm", "-v", f"{mounts / 'model_repository'}:/models/model_repository:ro", image,
                        "verify", f"/models/{MODEL_PATH}", check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"verify: ok: /models/{MODEL_PATH}: six files")


def test_download_inside_the_image_as_the_readme_shows(
    podman: Podman, image: str, tmp_path: Path, tiny_jina_dir: Path
) -> None:
    # The README's line, against a fake Hub on 127.0.0.1 (HF_ENDPOINT): --user makes the files
    # the caller's; the image's home is then not writable and the entrypoint falls back to /tmp.
    repo = tmp_path / "model_repository"
    repo.mkdir()
    os.chown(repo, 1000, 1000)
    with serve_fake_hub(tiny_jina_dir) as hub:
        result = podman.run("run", "--rm", "--network", "host", "--user", "1000:1000",
                            "-e", f"HF_ENDPOINT={hub.hub_url}", "-v", f"{repo}:/models/model_repository", image,
                            "download", REPO_ID, "--to", f"/models/{MODEL_PATH}", check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: ok:" in result.stdout
    folder = tmp_path / MODEL_PATH
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in tiny_jina_dir.iterdir())
    assert {p.stat().st_uid for p in folder.iterdir()} == {1000}


def test_a_bad_embed_toml_stops_the_container_at_once_with_the_compiler_message(
    podman: Podman, image: str, mounts: Path
) -> None:
    config = _write_toml(mounts, "bad.toml", ports_toml() + (
        f'[batching]\nmax_batch_sise = 8\n[[models]]\nname = "{MODEL_NAME}"\npath = "{MODEL_PATH}"\n'
    ))
    start = time.monotonic()
    result = podman.run("run", "--rm", *_run_args(config, mounts), image, check=False, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "embed.toml: `batching.max_batch_sise`: unknown key" in result.stderr
    assert "fix: remove it or correct its spelling" in result.stderr
    assert time.monotonic() - start < 30


def test_a_model_folder_without_weights_stops_the_container_naming_the_file(
    podman: Podman, image: str, mounts: Path
) -> None:
    config = _write_toml(mounts, "empty.toml", ports_toml() + (
        f'[[models]]\nname = "{MODEL_NAME}"\npath = "model_repository/empty/1"\n'
    ))
    result = podman.run("run", "--rm", *_run_args(config, mounts), image, check=False, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "missing file /models/model_repository/empty/1/model.onnx_data" in result.stderr
    assert "appliance download jinaai/jina-embeddings-v3" in result.stderr


def test_podman_stop_ends_the_container_cleanly_within_ten_seconds(podman: Podman, running: Running) -> None:
    # Last in the module: it stops the shared container.
    start = time.monotonic()
    podman.run("stop", "--time", "30", running.name, timeout=60)
    took = time.monotonic() - start
    podman.measured(f"podman stop took {took:.1f} s")
    state = json.loads(podman.run("inspect", "--format", "{{json .State}}", running.name).stdout)
    assert took < STOP_LIMIT_S
    assert state["ExitCode"] == 0  # supervisord stopped its programs: not killed by the stop timeout
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{running.base_url}/health", timeout=2)
