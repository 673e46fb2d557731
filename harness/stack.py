"""Start the real appliance (`appliance serve`: supervisord, tritonserver, gateway) for tests.

Ports are chosen at run time on 127.0.0.1; readiness is polled to a deadline, never slept for.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

READY_DEADLINE_S = 120.0


def toml_int(toml: str, key: str) -> int:
    """The integer value of `key = N` in a TOML text (ports written by `ports_toml`)."""
    match = re.search(rf"^{re.escape(key)} = (\d+)$", toml, re.MULTILINE)
    assert match, f"{key} not in {toml}"
    return int(match.group(1))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ports_toml() -> str:
    """A [server] table with four free loopback ports."""
    return (
        "[server]\n"
        'host = "127.0.0.1"\n'
        f"port = {free_port()}\n"
        'triton_host = "127.0.0.1"\n'
        f"triton_http_port = {free_port()}\n"
        f"triton_grpc_port = {free_port()}\n"
        f"triton_metrics_port = {free_port()}\n"
    )


def poll_until_ok(process: subprocess.Popen[bytes], url: str, deadline_s: float,
                  log: Callable[[], str], what: str, interval_s: float = 0.05) -> float:
    """Poll `url` until it answers 200 while `process` lives; return the seconds it took."""
    start = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() - start < deadline_s:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}:\n{log()[-4000:]}")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(interval_s)  # poll interval, not a wait for a condition
    raise TimeoutError(f"{what} not ready after {deadline_s}s:\n{log()[-4000:]}")


@dataclass
class Stack:
    """A running appliance started from an embed.toml written into `workdir`."""

    workdir: Path
    toml: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    base_url: str = ""

    @property
    def log_path(self) -> Path:
        return self.workdir / "appliance.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, wait: bool = True) -> Stack:
        config = self.workdir / "embed.toml"
        config.write_text(self.toml)
        self.base_url = f"http://127.0.0.1:{toml_int(self.toml, 'port')}"
        env = dict(os.environ, **self.env)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appliance.cli", "serve", "--config", str(config),
                 "--runtime-dir", str(self.workdir / "runtime")],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> float:
        """Poll /ready until 200; return the seconds it took."""
        assert self.process is not None
        return poll_until_ok(self.process, f"{self.base_url}/ready", deadline_s, self.log, "appliance")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def model_toml(name: str, path: Path, **extra: object) -> str:
    lines = ["[[models]]", f'name = "{name}"', f'path = "{path}"']
    for key, value in extra.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)
