"""Prints what the container tests measured (build time, image size, readiness, stop) at the end."""

from __future__ import annotations

import pytest

MEASUREMENTS = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[MEASUREMENTS] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(MEASUREMENTS, [])
    if lines:
        terminalreporter.section("container measurements")
        for line in lines:
            terminalreporter.write_line(line)
