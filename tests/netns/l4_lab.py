"""Helpers of the L4 netns tests: run herder as the director of a lab, watch its tables."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from herder.lab.lab import Lab
from herder.lab.node import Node, helper_env
from herder.proc import Child, python_executable

VIP = "198.18.0.100"


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` every 20 ms until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def herder(node: Node, *args: str, check: bool = True, input: str | None = None, timeout: float = 30.0):
    """Run ``herder ARGS`` in ``node`` (the checkout's herder, the test's interpreter)."""
    return node.run([python_executable(), "-m", "herder", *args], env=helper_env(), check=check, input=input,
                    timeout=timeout)


def map_values(node: Node, spec: str, name: str) -> list:
    """The element values (or keys, for a set) of an nft map in ``node``; [] if it is missing."""
    res = node.run(["nft", "-j", "list", "map", *spec.split(), name], check=False)
    if res.returncode != 0:
        return []
    for item in json.loads(res.stdout)["nftables"]:
        m = item.get("map")
        if m is not None:
            return [e[1] if isinstance(e, list) else e for e in m.get("elem", ())]
    return []


class Director:
    """``herder run CONFIG`` in the lab's director node; SIGHUP reloads a rewritten config."""

    def __init__(self, lab: Lab, tmp_path: Path, config: str, node: str = "director") -> None:
        self.lab = lab
        self.node = lab.node(node)
        self.path = tmp_path / "herder.toml"
        self.path.write_text(config)
        self.child: Child = self.node.start([python_executable(), "-m", "herder", "run", str(self.path)],
                                            name="herder", env=helper_env())
        wait_for(lambda: "herder" in self.node.run(["nft", "list", "tables"]).stdout or not self.child.alive(),
                 15, "herder's nftables tables")
        assert self.child.alive(), self.log()

    def log(self) -> str:
        try:
            return self.lab.log_path(self.node.name, "herder").read_text()[-4000:]
        except OSError:
            return "(no log)"

    def reload(self, config: str) -> None:
        self.path.write_text(config)
        os.kill(self.child.pid, signal.SIGHUP)

    def stop(self) -> None:
        self.child.stop(timeout=5.0)
