"""The examples and the README's sample output stay true."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.toml") if p.name != "broken.toml")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(herder_argv, path):
    r = subprocess.run([*herder_argv, "check", str(path.relative_to(ROOT))], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_readme_check_output_is_what_herder_prints(herder_argv):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\$ herder check (\S+)\n(.*?)```", readme, re.S)
    assert block, "README lost its `herder check` sample"
    r = subprocess.run([*herder_argv, "check", block.group(1)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == block.group(2).strip()
