"""Packet captures in a lab node: ``tcpdump -U`` writing a pcap file, read back as text.

Two tcpdump options make short captures complete:

* ``--immediate-mode``: without it the kernel hands packets to tcpdump in blocks, up to
  a second late; stopping tcpdump within that second loses them ("2 packets received
  by filter, 0 packets captured").
* ``-U``: every packet is written to the file as it is processed, so stopping tcpdump
  (SIGINT here) leaves a complete file rather than an empty one.

``-Z root`` keeps tcpdump from dropping privileges to a user that cannot write into the
lab's state directory.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from herder.proc import Child, run_sync, spawn

if TYPE_CHECKING:
    from herder.lab.node import Node

__all__ = ["Capture"]

log = logging.getLogger(__name__)


class Capture:
    """A running (then stopped) tcpdump in one node.

    Use as a context manager, or call :meth:`stop`; :meth:`lines` reads the packets back
    (``tcpdump -r -n -e``: link-layer headers included, so MAC addresses are visible).
    """

    def __init__(self, node: Node, path: Path, filter: str = "", iface: str = "any") -> None:
        self.node = node
        self.path = path
        self.filter = filter
        self.iface = iface
        self.log_path = path.with_suffix(".log")
        self.child: Child | None = None

    def start(self, timeout: float = 5.0) -> Capture:
        """Start tcpdump; return once it is capturing. RuntimeError if it fails to start."""
        argv = ["tcpdump", "-U", "--immediate-mode", "-n", "-Z", "root", "-i", self.iface, "-w", str(self.path)]
        if self.filter:
            argv.append(self.filter)
        with open(self.log_path, "wb") as logf:
            self.child = spawn(argv, name=f"tcpdump@{self.node.name}", netns=self.node.netns,
                               stdout=logf, stderr=subprocess.STDOUT)
        self.node.lab._track(self.child)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "listening on" in text:
                return self
            if not self.child.alive():
                raise RuntimeError(f"tcpdump in {self.node.name} exited: {text.strip()}")
            time.sleep(0.01)
        self.child.stop()
        raise RuntimeError(f"tcpdump in {self.node.name} did not start within {timeout}s")

    def stop(self, settle_s: float = 0.05) -> None:
        """Stop tcpdump (SIGINT, so it closes the file cleanly). Idempotent.

        Waits ``settle_s`` first, so packets that just crossed the wire are written.
        """
        if self.child is not None and self.child.alive():
            time.sleep(settle_s)
            self.child.stop(timeout=2.0, sig=signal.SIGINT)

    def lines(self, filter: str = "", timeout: float = 10.0) -> list[str]:
        """The captured packets as ``tcpdump -n -e`` lines, optionally re-filtered."""
        argv = ["tcpdump", "-n", "-e", "-r", str(self.path)]
        if filter:
            argv.append(filter)
        res = run_sync(argv, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"tcpdump -r {self.path}: {res.stderr.decode(errors='replace').strip()}")
        return [line for line in res.stdout.decode(errors="replace").splitlines() if line.strip()]

    def count(self, filter: str = "") -> int:
        """How many captured packets match ``filter`` (all if empty)."""
        return len(self.lines(filter))

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
