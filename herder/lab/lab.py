"""A running lab: bring a topology up, find it again from another process, take it down.

Theory of operation
-------------------
A lab is identified by its name alone. Everything it creates is derived from that name:

* namespaces ``hl-<name>-<node>`` and ``hl-<name>-switch`` (:mod:`herder.lab.netns`);
* a state directory ``<state root>/<name>/`` (default root ``/run/herder/lab``, or
  ``$HERDER_LAB_STATE_DIR``) holding ``state.json`` (the topology document, the owner
  process, every started process with PID and start time), the processes' logs and
  captures.

:meth:`Lab.up` writes the state file *before* creating anything, then builds; a failure
part-way removes whatever was built and re-raises. :func:`down` needs only the name: it
stops the recorded processes (PID checked against the recorded start time, so a reused
PID is never signalled), then every process still inside the lab's namespaces, deletes
the namespaces (veths and bridges go with them) and the state directory. So a lab whose
creator crashed, or whose state file is gone, is still removed completely.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herder.lab import netns as nsmod
from herder.lab.netns import LabError, check_lab_name, netns_name
from herder.lab.node import Node, helper_env, wait_entered, wait_listening
from herder.lab.topology import SWITCH, Topology, parse_topology, resolve_topology
from herder.proc import Child, children, pid_running, pid_start_time, python_executable, spawn, stop_pid

__all__ = ["Lab", "LabInfo", "down", "list_labs", "stale_labs", "state_root"]

log = logging.getLogger(__name__)

DEFAULT_STATE_ROOT = "/run/herder/lab"


def state_root() -> Path:
    """Where lab state lives: ``$HERDER_LAB_STATE_DIR`` or ``/run/herder/lab``."""
    return Path(os.environ.get("HERDER_LAB_STATE_DIR", DEFAULT_STATE_ROOT))


def _state_dir(name: str, root: Path | None) -> Path:
    return (root or state_root()) / name


@contextlib.contextmanager
def _locked_state(directory: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write ``state.json`` under an exclusive lock."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = directory / "state.json"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            state = {}
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _expand(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    return [a.format(**values) for a in argv]


class Lab:
    """A topology built as network namespaces. Create with :meth:`up` or :meth:`attach`.

    A Lab from :meth:`up` holds the :class:`~herder.proc.Child` of every process it
    started; :meth:`down` stops them, then removes everything (see the module doc).
    Use it as a context manager to take it down on exit, failure included.
    """

    def __init__(self, name: str, topology: Topology, state_dir: Path) -> None:
        self.name = check_lab_name(name)
        self.topology = topology
        self.state_dir = state_dir
        self.up_s: float | None = None
        self._children: list[Child] = []
        self._nodes = {n.name: Node(self, n.name, netns_name(name, n.name), n) for n in topology.nodes}
        self._switch = Node(self, SWITCH, netns_name(name, SWITCH), None)
        self._seq = 0

    def __repr__(self) -> str:
        return f"<Lab {self.name} topology={self.topology.name} nodes={len(self._nodes)}>"

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    def up(cls, topology: str | Path | Topology, *, name: str | None = None, start_processes: bool = True,
           root: Path | None = None, ready_timeout: float = 10.0, tag: str | None = None) -> Lab:
        """Build ``topology`` (a shipped name, a file, or a Topology) as lab ``name``.

        ``name`` defaults to the topology's name (it must be a valid lab name then).
        Starts the topology's processes unless ``start_processes`` is False, and returns
        once they all listen on their ready ports. Raises LabError if the lab already
        exists or anything fails; nothing is left behind in that case.
        ``up_s`` on the result is the bring-up time in seconds. ``tag`` marks labs
        owned by this process (the pytest plugin uses it to find labs of killed runs).
        """
        t0 = time.monotonic()
        topo = resolve_topology(topology)
        if name is None:
            try:
                name = check_lab_name(topo.name)
            except LabError:
                raise LabError(f"the topology name {topo.name!r} is not a valid lab name "
                               "(a letter, then up to 11 letters or digits): give a name") from None
        check_lab_name(name)
        directory = _state_dir(name, root)
        existing = nsmod.lab_namespaces(name)
        if existing or (directory / "state.json").exists():
            raise LabError(f"lab {name} already exists (herder lab down {name} removes it)")
        with _locked_state(directory) as state:
            state.update({
                "name": name,
                "topology": topo.name,
                "source": topo.source,
                "topology_data": dict(topo.data),
                "created": time.time(),
                "tag": tag,
                "owner_pid": os.getpid(),
                "owner_start": pid_start_time(os.getpid()),
                "namespaces": [netns_name(name, SWITCH), *(netns_name(name, n.name) for n in topo.nodes)],
                "processes": [],
            })
        lab = cls(name, topo, directory)
        try:
            nsmod.run_plan(nsmod.build_plan(topo, name))
            if start_processes:
                lab._start_topology_processes(ready_timeout)
        except BaseException:
            log.warning("lab %s: bring-up failed; removing what was built", name)
            try:
                lab.down()
            except Exception:
                log.exception("lab %s: cleanup after failed bring-up failed", name)
            raise
        lab.up_s = time.monotonic() - t0
        log.info("lab %s (%s) up in %.2fs", name, topo.name, lab.up_s)
        return lab

    @classmethod
    def attach(cls, name: str, *, root: Path | None = None) -> Lab:
        """The lab ``name`` as brought up earlier, possibly by another process.

        Its processes are known by PID only (no Child objects). LabError if there is no
        such lab.
        """
        directory = _state_dir(check_lab_name(name), root)
        state = _read_state(directory)
        if state is None:
            hint = " (its namespaces exist without a state file: herder lab down " + name + ")" \
                if nsmod.lab_namespaces(name) else ""
            raise LabError(f"no lab {name}{hint}")
        topo = parse_topology(state["topology_data"], name=state.get("topology", name),
                              source=state.get("source", ""))
        return cls(name, topo, directory)

    def down(self, timeout: float = 2.0) -> list[str]:
        """Stop every process, delete every namespace and the state directory.

        Returns the namespaces removed. Safe to call twice.
        """
        for child in reversed(self._children):
            if child.alive():
                child.stop(timeout)
            else:
                children.discard(child)  # already reaped by alive(); never signal a reused PID
        self._children.clear()
        return down(self.name, root=self.state_dir.parent, timeout=timeout)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- nodes -------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        """The node called ``name`` (``switch`` is the namespace holding the bridges)."""
        if name == SWITCH:
            return self._switch
        try:
            return self._nodes[name]
        except KeyError:
            raise LabError(f"lab {self.name} has no node {name!r} (nodes: {', '.join(self._nodes)})") from None

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    @property
    def switch(self) -> Node:
        return self._switch

    @property
    def namespaces(self) -> list[str]:
        return [self._switch.netns, *(n.netns for n in self._nodes.values())]

    @property
    def vars(self) -> Mapping[str, str]:
        """The topology's ``[vars]`` (e.g. ``lab.vars["vip"]``)."""
        return self.topology.vars

    # --- processes ---------------------------------------------------------------------

    def log_path(self, node: str, process: str) -> Path:
        return self.state_dir / "logs" / f"{node}-{process}.log"

    def new_capture_path(self, node: str) -> Path:
        """A fresh file name in the lab's capture directory (``.pcap``)."""
        self._seq += 1
        d = self.state_dir / "captures"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{node}-{os.getpid()}-{self._seq}.pcap"

    def _track(self, child: Child) -> None:
        """Stop ``child`` (a helper such as tcpdump or a traffic generator) in :meth:`down`."""
        self._children.append(child)

    def _spawn(self, node: Node, pname: str, argv: Sequence[str], *, env: Mapping[str, str] | None) -> Child:
        logp = self.log_path(node.name, pname)
        logp.parent.mkdir(parents=True, exist_ok=True)
        with open(logp, "ab") as logf:
            child = spawn(argv, name=f"{pname}@{node.name}", netns=node.netns, env=env, stdout=logf, stderr=logf)
        self._children.append(child)
        with _locked_state(self.state_dir) as state:
            state.setdefault("processes", []).append({
                "node": node.name, "name": pname, "pid": child.pid, "start_time": pid_start_time(child.pid),
                "argv": list(argv), "log": str(logp),
            })
        return child

    def _start_topology_processes(self, timeout: float) -> None:
        """Start every process of the topology at once, then wait for each to be ready."""
        started: list[tuple[Child, Node, tuple[int, ...], Path]] = []
        for n in self.topology.nodes:
            node = self._nodes[n.name]
            values = {"python": python_executable(), "node": n.name, "lab": self.name,
                      "netns": node.netns, "state_dir": str(self.state_dir)}
            for p in n.processes:
                child = self._spawn(node, p.name, _expand(p.argv, values), env=helper_env())
                started.append((child, node, p.ready_ports, self.log_path(n.name, p.name)))
        deadline = time.monotonic() + timeout
        for child, node, ports, logp in started:
            try:
                wait_entered(child, node.netns, max(0.1, deadline - time.monotonic()))
                if ports:
                    wait_listening(child, ports, max(0.1, deadline - time.monotonic()))
            except LabError as e:
                tail = logp.read_text(errors="replace")[-1500:] if logp.exists() else ""
                raise LabError(f"lab {self.name}: {e}\n{tail}") from None

    def processes(self) -> list[dict[str, Any]]:
        """The recorded processes, each with ``alive`` (PID still the recorded process)."""
        state = _read_state(self.state_dir) or {}
        out = []
        for p in state.get("processes", []):
            out.append({**p, "alive": pid_running(p["pid"], p.get("start_time"))})
        return out


@dataclass(slots=True)
class LabInfo:
    """What ``herder lab status`` shows about one lab."""

    name: str
    topology: str | None
    namespaces: list[str]
    processes: list[dict[str, Any]] = field(default_factory=list)
    owner_pid: int | None = None
    created: float | None = None
    has_state: bool = True

    @property
    def orphaned(self) -> bool:
        """Namespaces without state (a crash), or state without namespaces."""
        return not self.has_state or not self.namespaces


def list_labs(root: Path | None = None) -> list[LabInfo]:
    """Every lab that has a state directory or namespaces, sorted by name."""
    base = root or state_root()
    by_ns = nsmod.lab_namespaces()
    names = set(by_ns)
    if base.is_dir():
        names |= {p.name for p in base.iterdir() if p.is_dir() and (p / "state.json").exists()}
    out = []
    for name in sorted(names):
        state = _read_state(base / name)
        info = LabInfo(name=name, topology=None, namespaces=sorted(by_ns.get(name, [])), has_state=state is not None)
        if state:
            info.topology = state.get("topology")
            info.owner_pid = state.get("owner_pid")
            info.created = state.get("created")
            for p in state.get("processes", []):
                info.processes.append({**p, "alive": pid_running(p["pid"], p.get("start_time"))})
        out.append(info)
    return out


def down(name: str, *, root: Path | None = None, timeout: float = 2.0) -> list[str]:
    """Remove lab ``name`` completely, from its name alone (see the module doc).

    Returns the namespaces deleted (empty if there were none: then only stale state is
    removed). Raises LabError if something could not be removed.
    """
    check_lab_name(name)
    directory = _state_dir(name, root)
    state = _read_state(directory) or {}
    for p in state.get("processes", []):
        if stop_pid(p["pid"], start_time=p.get("start_time"), timeout=timeout):
            log.debug("lab %s: stopped %s@%s pid %d", name, p.get("name"), p.get("node"), p["pid"])
    removed = nsmod.destroy(name, timeout=timeout)
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    log.info("lab %s down: %d namespaces removed", name, len(removed))
    return removed


def stale_labs(tag: str, root: Path | None = None) -> list[str]:
    """Labs brought up with ``tag`` whose owner process is gone (e.g. a killed test run).

    Labs from ``herder lab up`` carry no tag (their owner, the CLI, exits at once) and
    are never returned.
    """
    out = []
    for info in list_labs(root):
        state = _read_state((root or state_root()) / info.name) or {}
        if state.get("tag") != tag:
            continue
        owner = state.get("owner_pid")
        if owner is None or not pid_running(owner, state.get("owner_start")):
            out.append(info.name)
    return out
