"""End-to-end fixtures: ONE real stack per model set, shared by every test that needs it.

Starting `appliance serve` (supervisord + tritonserver + gateway) costs ~5 s and stopping it about
as much, so the stacks are session-scoped:

- `main_stack`: the tiny jina-shaped model and the all-MiniLM demo model, behind two API keys
  (one from an environment variable, one as a sha256 digest), with a batching configuration that
  forces requests to be split into several chunks and merged with other requests inside Triton.
  It is started WITHOUT waiting, with tritonserver held still until the gateway has answered, and
  every `/ready` answer seen until the models are loaded is recorded for the readiness test.
- `e5_stack`: real multilingual-e5-small weights behind jina's interface (../shared), open API.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from harness.reference import Reference
from harness.served import (
    BATCHING_TOML,
    DEMO,
    E5,
    ENV_KEY,
    KEY_ENV_VAR,
    TINY,
    Served,
    auth_toml,
    stop_cleanly,
)
from harness.stack import READY_DEADLINE_S, Stack, model_toml, ports_toml


def _tritonserver_in_session(session_id: int) -> int | None:
    """The pid of the `tritonserver` process started under `session_id` (the stack's session), if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except (OSError, IndexError):
            continue
        if (
            int(fields[3]) == session_id
            and fields[0] not in ("Z", "X")
            and Path(argv0).name == "tritonserver"
        ):
            return int(entry.name)
    return None


def _poll_ready(
    stack: Stack,
    client: httpx.Client,
    phase: str,
    history: list[tuple[float, str, int | str]],
    start: float,
    until: Callable[[list[tuple[float, str, int | str]]], bool],
    deadline_s: float,
) -> None:
    """Poll /ready (no key), appending (seconds, phase, status or transport error) until `until(history)`."""
    assert stack.process is not None
    while not until(history):
        if time.monotonic() - start > deadline_s:
            raise TimeoutError(f"/ready during {phase}: {history[-5:]}\n{stack.log()[-4000:]}")
        if stack.process.poll() is not None:
            raise RuntimeError(
                f"appliance exited with {stack.process.returncode}:\n{stack.log()[-4000:]}"
            )
        try:
            status: int | str = client.get(f"{stack.base_url}/ready").status_code
        except httpx.TransportError as exc:  # the gateway is not listening yet
            status = type(exc).__name__
        history.append((time.monotonic() - start, phase, status))
        time.sleep(0.05)  # poll interval, not a wait for a condition


def _answered_three_times(history: list[tuple[float, str, int | str]]) -> bool:
    return sum(1 for _, _, status in history if isinstance(status, int)) >= 3


def _start_recording_readiness(
    stack: Stack, deadline_s: float = READY_DEADLINE_S
) -> list[tuple[float, str, int | str]]:
    """Start the stack with tritonserver held still (SIGSTOP) while its gateway comes up, then let it load.

    Triton is caught as soon as it is exec'd, long before it can load a model, and held until the
    gateway has answered /ready three times ("frozen" phase): a correct gateway says 503 there,
    whatever the machine's speed. Then Triton continues loading ("loading" phase) and /ready is
    polled until the first 200. Every answer is recorded for the readiness test.
    """
    stack.start(wait=False)
    assert stack.process is not None
    # Stack starts `appliance serve` in a new session, and supervisord execs in place.
    session_id = stack.process.pid
    history: list[tuple[float, str, int | str]] = []
    start = time.monotonic()
    try:
        triton = None
        while triton is None:
            if stack.process.poll() is not None:
                raise RuntimeError(
                    f"appliance exited with {stack.process.returncode}:\n{stack.log()[-4000:]}"
                )
            if time.monotonic() - start > deadline_s:
                raise TimeoutError(f"tritonserver never started:\n{stack.log()[-4000:]}")
            triton = _tritonserver_in_session(session_id)
            time.sleep(0.005)
        os.kill(triton, signal.SIGSTOP)
        with httpx.Client(timeout=10.0) as client:
            try:
                _poll_ready(
                    stack, client, "frozen", history, start, _answered_three_times, deadline_s
                )
            finally:
                os.kill(triton, signal.SIGCONT)
            _poll_ready(
                stack, client, "loading", history, start, lambda h: h[-1][2] == 200, deadline_s
            )
        return history
    except BaseException:
        stack.stop()
        raise


@pytest.fixture(scope="session")
def tiny_ref(tiny_jina_dir: Path) -> Reference:
    return Reference(tiny_jina_dir)


@pytest.fixture(scope="session")
def demo_ref(demo_model_dir: Path) -> Reference:
    return Reference(demo_model_dir)


@pytest.fixture(scope="session")
def main_stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path, demo_model_dir: Path
) -> Iterator[Served]:
    """tiny-jina + minilm behind two API keys; the /ready answers seen during start-up are kept."""
    toml = (
        ports_toml()
        + BATCHING_TOML
        + auth_toml()
        + model_toml(TINY, tiny_jina_dir, precision="fp32")
        + model_toml(DEMO, demo_model_dir)
    )
    stack = Stack(tmp_path_factory.mktemp("main-stack"), toml, env={KEY_ENV_VAR: ENV_KEY})
    history = _start_recording_readiness(stack)
    try:
        yield Served(stack, key=ENV_KEY, ready_history=history)
    finally:
        stop_cleanly(stack)


@pytest.fixture(scope="session")
def e5_ref(e5_small_jina_dir: Path) -> Reference:
    return Reference(e5_small_jina_dir)


@pytest.fixture(scope="session")
def e5_stack(tmp_path_factory: pytest.TempPathFactory, e5_small_jina_dir: Path) -> Iterator[Served]:
    """Real multilingual-e5-small weights behind jina's interface; no keys (an open API)."""
    toml = ports_toml() + model_toml(E5, e5_small_jina_dir, precision="fp32")
    stack = Stack(tmp_path_factory.mktemp("e5-stack"), toml).start()
    try:
        yield Served(stack, key=None)
    finally:
        stop_cleanly(stack)
