"""A stack's own processes, read from /proc (no psutil): its tree, RSS, liveness.

Tests find THEIR tritonserver / gateway by walking down from their own `appliance serve`
(supervisord) pid, never by name across the machine: other stacks may be running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    name: str  # /proc/<pid>/comm
    cmdline: tuple[str, ...]
    state: str
    pgid: int = 0
    sid: int = 0

    @property
    def command(self) -> str:
        return " ".join(self.cmdline)


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return Proc(pid, int(fields[1]), name, tuple(c.decode(errors="replace") for c in cmdline if c), fields[0],
                int(fields[2]), int(fields[3]))


def _all() -> list[Proc]:
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = read_proc(int(entry))
            if proc is not None:
                procs.append(proc)
    return procs


def descendants(root: int) -> list[Proc]:
    """Every live process below `root` (not `root` itself), parents before children."""
    children: dict[int, list[Proc]] = {}
    for proc in _all():
        children.setdefault(proc.ppid, []).append(proc)
    out: list[Proc] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child.pid)
    return out


def in_group(pgid: int) -> list[Proc]:
    """Live processes of process group `pgid` (they stay in it when their parent dies)."""
    return [p for p in _all() if p.pgid == pgid and p.state != "Z"]


def in_session(sid: int) -> list[Proc]:
    """Live processes of session `sid` (the test harness starts each stack in a new session)."""
    return [p for p in _all() if p.sid == sid and p.state != "Z"]


def find(root: int, *, name: str | None = None, cmd_contains: str | None = None) -> list[Proc]:
    """Descendants of `root` whose comm is `name` and/or whose command line contains `cmd_contains`."""
    return [
        p for p in descendants(root)
        if (name is None or p.name == name) and (cmd_contains is None or cmd_contains in p.command)
    ]


def tritonserver(root: int) -> Proc | None:
    found = find(root, name="tritonserver")
    return found[0] if found else None


def gateway(root: int) -> Proc | None:
    found = find(root, cmd_contains="appliance.runtime.gateway")
    return found[0] if found else None


def backend_stubs(root: int) -> list[Proc]:
    """Triton's Python-backend stub processes (one per model instance: where ONNX Runtime runs)."""
    return find(root, cmd_contains="triton_python_backend_stub")


def rss_bytes(pid: int) -> int | None:
    """Resident set size, or None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return 0  # a zombie has no VmRSS line


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far (0 if the process is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    proc = read_proc(pid)
    return proc is not None and proc.state != "Z"
