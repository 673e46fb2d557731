"""A real `redis-server` (Debian's) on a free loopback port, for tests of limits shared by replicas."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis

from harness.stack import free_port

READY_DEADLINE_S = 10.0


@dataclass
class RedisServer:
    """`redis-server` without persistence, in `workdir`; `stop()` and `start()` again keep its port."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        self.port = self.port or free_port()
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        start = time.monotonic()
        while time.monotonic() - start < READY_DEADLINE_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)  # poll interval
        raise TimeoutError(f"redis-server not answering PING after {READY_DEADLINE_S} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
