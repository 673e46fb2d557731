"""The container tests' shared parts: podman set up once and the image built once per session, and
what they measured (build time, image size, readiness, stop), printed at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

MEASUREMENTS = pytest.StashKey[list[str]]()
REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/embed-appliance:test"
BASE_IMAGE = "localhost/localbase:bookworm"
SETUP_TOOLS = ("podman", "buildah", "runc", "debootstrap", "iptables")  # what podman-setup.sh installs


def pytest_configure(config: pytest.Config) -> None:
    config.stash[MEASUREMENTS] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(MEASUREMENTS, [])
    if lines:
        terminalreporter.section("container measurements")
        for line in lines:
            terminalreporter.write_line(line)


@dataclass(frozen=True)
class Podman:
    env: dict[str, str]
    measurements: list[str]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *args], capture_output=True, text=True, env=self.env,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    def measured(self, line: str) -> None:
        self.measurements.append(line)


@pytest.fixture(scope="session")
def podman(request: pytest.FixtureRequest) -> Podman:
    if os.geteuid() != 0:
        pytest.skip("container tests need root: scripts/podman-setup.sh installs podman and runs debootstrap")
    missing = [tool for tool in SETUP_TOOLS if shutil.which(tool) is None]
    if missing and shutil.which("apt-get") is None:
        pytest.skip(f"container tests need apt-get to install {', '.join(missing)} (see ../shared/podman.md)")
    start = time.monotonic()
    setup = subprocess.run(["bash", str(REPO / "scripts" / "podman-setup.sh")], capture_output=True, text=True,
                           timeout=1200, check=False)
    if setup.returncode != 0:
        pytest.fail(f"scripts/podman-setup.sh failed:\n{setup.stderr[-4000:]}")
    conf = setup.stdout.strip().splitlines()[-1]
    request.config.stash[MEASUREMENTS].append(
        f"podman-setup.sh (install what is missing, base image once) took {time.monotonic() - start:.1f} s"
    )
    return Podman(env=dict(os.environ, CONTAINERS_CONF=conf), measurements=request.config.stash[MEASUREMENTS])


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    start = time.monotonic()
    podman.run(
        "build", "--format", "docker",  # the docker format keeps HEALTHCHECK
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--pull=never",
        "--secret", "id=cacert,src=/etc/ssl/certs/ca-certificates.crt",
        "-t", IMAGE, "-f", str(REPO / "Containerfile"), str(REPO),
        timeout=1800,
    )
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    podman.measured(f"image built in {time.monotonic() - start:.1f} s, {size / 1e6:.0f} MB")
    return IMAGE
