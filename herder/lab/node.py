"""One lab node (a network namespace): run commands, start processes, serve, capture, probe.

Everything here runs a process inside the node's namespace through :mod:`herder.proc`
(``ip netns exec`` execs the program, so a PID is the program's own). Processes started
with :meth:`Node.start` are recorded in the lab's state file, so ``herder lab down`` in
another process still stops them by PID.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import TYPE_CHECKING

import herder
from herder.lab import topology as topo
from herder.lab.capture import Capture
from herder.lab.netns import NETNS_DIR, LabError
from herder.lab.traffic import ConnectionsReport, RequestsReport, parse_report
from herder.proc import Child, python_executable, run_sync, spawn

if TYPE_CHECKING:
    from herder.lab.lab import Lab

__all__ = ["Neighbour", "Node", "TrafficRun", "helper_env", "wait_entered", "wait_listening"]

log = logging.getLogger(__name__)

_TTL_RE = re.compile(r"ttl=(\d+)")


def helper_env() -> dict[str, str]:
    """Environment for herder's own helpers in a node: herder importable even uninstalled."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(herder.__file__)))
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": root + (os.pathsep + path if path else "")}


def _listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of ``pid`` (from /proc/PID/net)."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return ports


def wait_entered(child: Child, netns: str, timeout: float = 5.0) -> None:
    """Return once ``child`` (started through ``ip netns exec``) runs its own program in ``netns``.

    Until then its PID shows ``ip`` and, before ``setns``, the root namespace: anything
    that inspects the process (``/proc/PID/net``, its executable) must wait for this.
    Raises LabError if it exits or does not get there within ``timeout``.
    """
    want = os.stat(os.path.join(NETNS_DIR, netns)).st_ino
    ip_exe = os.path.realpath(shutil.which("ip") or "/usr/sbin/ip")
    deadline = time.monotonic() + timeout
    while True:
        try:
            entered = (os.stat(f"/proc/{child.pid}/ns/net").st_ino == want
                       and os.path.realpath(f"/proc/{child.pid}/exe") != ip_exe)
        except OSError:
            entered = False
        if entered:
            return
        if not child.alive():
            raise LabError(f"{child.name} (pid {child.pid}) exited with status {child.returncode} at start")
        if time.monotonic() >= deadline:
            raise LabError(f"{child.name} (pid {child.pid}) did not start in {netns} within {timeout}s")
        time.sleep(0.002)


def wait_listening(child: Child, ports: Sequence[int], timeout: float = 5.0) -> None:
    """Return once something listens on every TCP port in ``ports`` in ``child``'s namespace.

    Reads ``/proc/<pid>/net/tcp``, which shows the process's own namespace, so no
    process needs to be started to check. Raises LabError if ``child`` exits or the
    ports are not all listening within ``timeout``.
    """
    want = set(ports)
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive():
            raise LabError(f"{child.name} (pid {child.pid}) exited with status {child.returncode} "
                           f"before listening on {sorted(want)}")
        missing = want - _listening_ports(child.pid)
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise LabError(f"{child.name} (pid {child.pid}) not listening on {sorted(missing)} after {timeout}s")
        time.sleep(0.01)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One neighbour (ARP) table entry of a node."""

    address: str
    dev: str
    lladdr: str | None
    state: tuple[str, ...]


class TrafficRun:
    """A traffic generator running in the background; :meth:`wait` returns its report."""

    def __init__(self, node: Node, child: Child, out_path: str, limit_s: float) -> None:
        self.node = node
        self.child = child
        self.out_path = out_path
        self.limit_s = limit_s

    def wait(self, timeout: float | None = None) -> RequestsReport | ConnectionsReport:
        """Wait for the generator to finish (bounded by its own limit) and parse its report."""
        try:
            self.child.popen.wait(timeout if timeout is not None else self.limit_s + 5.0)
        except subprocess.TimeoutExpired:
            self.child.stop()
            raise LabError(f"traffic generator in {self.node.name} overran its limit") from None
        self.child.stop()
        with open(self.out_path) as f:
            text = f.read()
        try:
            return parse_report(text)
        except ValueError:
            raise LabError(f"traffic generator in {self.node.name} failed (exit {self.child.returncode}): "
                           f"{text[-2000:]}") from None


class Node:
    """A node of a running lab. Get one with :meth:`herder.lab.lab.Lab.node`.

    ``spec`` is the node's topology entry (None for the switch namespace).
    """

    def __init__(self, lab: Lab, name: str, netns: str, spec: topo.Node | None) -> None:
        self.lab = lab
        self.name = name
        self.netns = netns
        self.spec = spec

    def __repr__(self) -> str:
        return f"<Node {self.name} netns={self.netns}>"

    # --- addresses ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The node's first address on a non-loopback interface, as a string."""
        if self.spec is None or self.spec.address is None:
            raise LabError(f"{self.name} has no address")
        return str(self.spec.address)

    @property
    def addresses(self) -> tuple[IPv4Interface, ...]:
        return self.spec.addresses if self.spec else ()

    @property
    def interfaces(self) -> list[str]:
        """Interface names from the topology (the switch: its bridges and ports)."""
        if self.spec is None:
            return [b.name for b in self.lab.topology.bridges]
        return [i.name for i in self.spec.interfaces if not i.is_loopback]

    # --- running things ----------------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float = 10.0, check: bool = True,
            input: str | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the node and wait for it; stdout/stderr are returned as text.

        ``check`` raises LabError on a non-zero exit status (with stderr in the message).
        On timeout the command's process group is killed and LabError raised.
        """
        try:
            res = run_sync(argv, netns=self.netns, timeout=timeout,
                           input=input.encode() if input is not None else None, env=env)
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.name}: {' '.join(argv)} timed out after {timeout}s") from None
        out = subprocess.CompletedProcess(list(argv), res.returncode,
                                          res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"))
        if check and res.returncode != 0:
            raise LabError(f"{self.name}: {' '.join(argv)} exited {res.returncode}: "
                           f"{(out.stderr or out.stdout).strip()[-2000:]}")
        return out

    def sh(self, command: str, **kwargs) -> subprocess.CompletedProcess[str]:
        """Run a shell command line in the node (same options as :meth:`run`)."""
        return self.run(["sh", "-c", command], **kwargs)

    def start(self, argv: Sequence[str], *, name: str | None = None, ready_ports: Sequence[int] = (),
              ready_timeout: float = 5.0, env: Mapping[str, str] | None = None) -> Child:
        """Start a long-running process in the node and keep its real PID.

        Python programs: pass :func:`herder.proc.python_executable` (never ``python3``
        from PATH, which may be a forking pyenv shim). The process leads its own process
        group; output goes to ``<state dir>/logs/<node>-<name>.log``. It is recorded in
        the lab's state, stopped by :meth:`herder.lab.lab.Lab.down` (or by
        ``Child.stop()`` earlier). Returns once the program runs in the node (its PID no
        longer shows ``ip netns exec``); with ``ready_ports``, once those TCP ports
        listen too. LabError otherwise, and the process is stopped.
        """
        pname = name or os.path.basename(argv[0])
        child = self.lab._spawn(self, pname, argv, env=env)
        try:
            wait_entered(child, self.netns, ready_timeout)
            if ready_ports:
                wait_listening(child, ready_ports, ready_timeout)
        except LabError as e:
            child.stop()
            raise LabError(f"{e}; log: {self.lab.log_path(self.name, pname)}") from None
        return child

    def serve_http(self, port: int = 80, *, echo_ports: Sequence[int] = (), name: str | None = None,
                   timeout: float = 5.0) -> Child:
        """Start herder's tiny server answering every HTTP request with ``name`` (the node's).

        Also serves a line echo on ``echo_ports``. Returns once every port listens. See
        :mod:`herder.lab.serve` for what the answers carry.
        """
        argv = [python_executable(), "-m", "herder.lab.serve", "--name", name or self.name,
                "--lab", self.lab.name, "--http", str(port)]
        for p in echo_ports:
            argv += ["--echo", str(p)]
        return self.start(argv, name=f"serve-{port}", ready_ports=[port, *echo_ports], ready_timeout=timeout,
                          env=helper_env())

    # --- looking at the network --------------------------------------------------------

    def neighbours(self, dev: str | None = None) -> list[Neighbour]:
        """The node's IPv4 neighbour (ARP) table (``ip -j neigh show``)."""
        argv = ["ip", "-4", "-j", "neigh", "show"]
        if dev:
            argv += ["dev", dev]
        text = self.run(argv).stdout.strip()
        out = []
        for e in json.loads(text) if text else []:
            out.append(Neighbour(e["dst"], e.get("dev", dev or ""), e.get("lladdr"), tuple(e.get("state", ()))))
        return out

    def mac(self, dev: str) -> str:
        """The MAC address of interface ``dev`` in the node."""
        data = json.loads(self.run(["ip", "-j", "link", "show", "dev", dev]).stdout)
        return data[0]["address"]

    def ping(self, address: str | IPv4Address, *, timeout: float = 1.0) -> int | None:
        """Ping ``address`` once; the reply's TTL, or None if there was no reply.

        The TTL tells the path length: 64 is on-link, 63 is one router away.
        """
        res = self.run(["ping", "-n", "-c", "1", "-W", str(max(1, round(timeout))), str(address)],
                       check=False, timeout=timeout + 5)
        m = _TTL_RE.search(res.stdout)
        return int(m.group(1)) if res.returncode == 0 and m else None

    def capture(self, filter: str = "", *, iface: str | None = None, timeout: float = 5.0) -> Capture:
        """Start a packet capture in the node; returns once tcpdump is capturing.

        ``iface`` defaults to the node's only interface if it has exactly one (so
        link-layer headers are Ethernet), else ``any``. Use it as a context manager and
        read the result with :meth:`Capture.lines`.
        """
        if iface is None:
            ifs = self.interfaces if self.spec is not None else []
            iface = ifs[0] if len(ifs) == 1 else "any"
        path = self.lab.new_capture_path(self.name)
        return Capture(self, path, filter, iface).start(timeout)

    # --- traffic -----------------------------------------------------------------------

    def _traffic_argv(self, args: list[str]) -> list[str]:
        return [python_executable(), "-m", "herder.lab.traffic", *args]

    def requests(self, url: str, *, count: int = 10, timeout: float = 1.0, interval: float = 0.0,
                 sources: Sequence[str] = ()) -> RequestsReport:
        """Send ``count`` HTTP requests from this node (each a new connection); who answered each.

        Bounded: the run stops after ``count * (timeout + interval) + 1`` seconds.
        """
        args = ["requests", url, "--count", str(count), "--timeout", str(timeout), "--interval", str(interval)]
        for s in sources:
            args += ["--source", s]
        limit = count * (timeout + interval) + 1.0
        res = self.run(self._traffic_argv(args), timeout=limit + 10.0, env=helper_env())
        report = parse_report(res.stdout)
        assert isinstance(report, RequestsReport)
        return report

    def connections(self, host: str, port: int, *, count: int = 4, duration: float = 2.0, interval: float = 0.05,
                    timeout: float = 1.0, reconnect: bool = True,
                    background: bool = False) -> ConnectionsReport | TrafficRun:
        """Hold ``count`` long-lived echo connections for ``duration`` s; report every break.

        With ``background=True`` returns a :class:`TrafficRun` at once (do something to
        the network, then ``run.wait()``); otherwise waits and returns the report.
        """
        args = ["connections", host, str(port), "--count", str(count), "--duration", str(duration),
                "--interval", str(interval), "--timeout", str(timeout)]
        if not reconnect:
            args.append("--no-reconnect")
        limit = duration + 2 * timeout + interval + 5.0
        out_path = str(self.lab.new_capture_path(self.name).with_suffix(".json"))
        with open(out_path, "wb") as out:
            child = spawn(self._traffic_argv(args), name=f"connections@{self.name}", netns=self.netns,
                          env=helper_env(), stdout=out)
        self.lab._track(child)
        run = TrafficRun(self, child, out_path, limit)
        if background:
            return run
        report = run.wait()
        assert isinstance(report, ConnectionsReport)
        return report
