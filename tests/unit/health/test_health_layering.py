"""The pure parts of health (policy, timing, classification) import no I/O, even indirectly."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = {"asyncio", "socket", "pyroute2", "uvloop", "selectors", "subprocess"}
PURE = ["herder.health.hysteresis", "herder.health.timing", "herder.health.classify",
        "herder.health.passive", "herder.health.base"]


def module_file(name: str) -> Path | None:
    p = ROOT.joinpath(*name.split("."))
    if p.with_suffix(".py").exists():
        return p.with_suffix(".py")
    if (p / "__init__.py").exists():
        return p / "__init__.py"
    return None


def imports(name: str) -> set[str]:
    path = module_file(name)
    assert path is not None, name
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def closure(name: str) -> set[str]:
    """Every module ``name`` imports, following herder's own modules (and their packages)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        if not mod.startswith("herder"):
            continue
        parts = mod.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
            todo.append(".".join(parts[:i]))
        if module_file(mod) is not None:
            todo.extend(imports(mod))
    return seen


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports_no_io(name):
    roots = {m.split(".")[0] for m in closure(name)}
    assert not roots & FORBIDDEN, f"{name} pulls in {sorted(roots & FORBIDDEN)}"
