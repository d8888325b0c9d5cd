"""The layering rule: pure cores never import asyncio, socket or pyroute2.

Sans-I/O cores (STYLE.md, synthesis A) take bytes, events and time as arguments, so they
can be tested without sockets or clocks. This test reads the imports of every core module
with ``ast`` (not a grep, so comments and strings do not count).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "herder"
FORBIDDEN = {"asyncio", "socket", "pyroute2", "uvloop"}

#: Directories and files that are pure cores. A path that does not exist yet is skipped;
#: as layers land, their cores are already covered by these entries.
PURE = [
    "pool",
    "balance",
    "config",
    "health/hysteresis.py",
    "l4/plan.py",
    "l7/core",
    "dns/answer.py",
    "ha/vrrp/packet.py",
    "ha/vrrp/machine.py",
]


def pure_modules() -> list[Path]:
    out: list[Path] = []
    for entry in PURE:
        p = ROOT / entry
        if p.is_dir():
            out.extend(sorted(p.rglob("*.py")))
        elif p.exists():
            out.append(p)
    return out


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_there_are_pure_modules_to_check():
    assert len(pure_modules()) >= 5


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_core_imports_no_io(path: Path):
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}: keep I/O out of the core"


def test_the_rule_itself_catches_an_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom asyncio import sleep\n# import socket\nx = 'import pyroute2'\n")
    assert imported_roots(f) & FORBIDDEN == {"asyncio"}
