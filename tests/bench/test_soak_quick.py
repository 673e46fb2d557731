"""A 60-second soak (bench/soak.py at 2x capacity, tiny jina-shaped model) asserts only what must
never happen: a 5xx, a wrong or lost answer, a malformed 429, a restart, memory growth beyond the
soak's bound. Speed (the load delivered, goodput, latency) is reported, never asserted here: the
10-minute runs and their figures are in docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.assets import REPO

pytestmark = [pytest.mark.bench, pytest.mark.e2e]


def test_a_minute_at_twice_capacity_loses_nothing_answers_nothing_wrong_and_keeps_memory_flat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "soak"
    command = [sys.executable, "bench/soak.py", "--minutes", "1", "--calibrate-s", "5", "--sample-s", "2",
               "--out", str(out)]
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert (out / "soak-summary.json").exists(), f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    summary = json.loads((out / "soak-summary.json").read_text())
    outcomes = summary["outcomes"]
    never = {k: v for k, v in outcomes.items() if k in ("5xx", "wrong", "lost", "bad_429") or k.startswith("unexpected")}
    assert not never, (never, summary["problems"])
    assert outcomes.get("ok", 0) > 0 and outcomes.get("shed_429", 0) > 0  # it really ran past capacity
    assert summary["sent"] == summary["answered"]  # one outcome per request sent
    for phase in ("warm_up_outcomes", "calibration_outcomes"):
        assert set(summary[phase]) <= {"ok"}, summary[phase]
    assert summary["process_restarts"] is False
    assert all(m["flat"] for m in summary["memory"]), summary["memory"]
    assert summary["appliance_exit_code"] == 0 and not summary["traceback_in_log"]
    with capsys.disabled():
        print(f"\n[soak 60 s] delivered {summary['delivered_rps']} of {summary['offered_rps']} req/s offered, "
              f"goodput {summary['goodput_vs_capacity']}x capacity, outcomes {outcomes}, "
              f"admitted p99 {summary['p99_vs_capacity_p99']}x its p99 at capacity", flush=True)
