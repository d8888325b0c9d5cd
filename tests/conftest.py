"""Shared test set-up: group markers by directory, the lab plugin, a per-group summary.

Groups: tests/unit (pure, fast), tests/integration (real processes on 127.0.0.1),
tests/netns (root; network namespaces built by herder's lab, skipped with a printed
reason without root).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).parent
GROUPS = ("unit", "integration", "netns")

pytest_plugins = ["herder.lab.pytest_plugin"]


def pytest_collection_modifyitems(config, items):
    """Every test carries the marker of its directory's group (so `-m unit` etc. work)."""
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(HERE.resolve())
        group = rel.parts[0]
        if group in GROUPS and not item.get_closest_marker(group):
            item.add_marker(getattr(pytest.mark, group))


_results: Counter = Counter()


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        group = next((g for g in GROUPS if f"tests/{g}/" in report.nodeid or report.nodeid.startswith(f"{g}/")), "other")
        _results[(group, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    tr.section("herder test groups")
    for g in GROUPS:
        counts = {o: _results[(g, o)] for o in ("passed", "failed", "skipped")}
        tr.write_line(f"{g:12s} passed {counts['passed']:4d}  failed {counts['failed']:3d}  skipped {counts['skipped']:3d}")


@pytest.fixture
def herder_argv() -> list[str]:
    """argv prefix that runs this checkout's herder with the test's interpreter."""
    return [sys.executable, "-m", "herder"]
