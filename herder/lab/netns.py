"""Build and remove a lab's network namespaces, veths and bridges with iproute2.

Theory of operation
-------------------
:func:`build_plan` turns a :class:`~herder.lab.topology.Topology` and a lab name into an
ordered list of :class:`Step` (pure: tested without root); :func:`run_plan` runs them.
Each step is one ``ip`` or ``sysctl`` process, mostly ``ip -n NS -batch -`` so a whole
namespace is configured by one process. The order matters:

1. ``ip netns add`` every namespace: ``hl-<lab>-switch`` and ``hl-<lab>-<node>``.
2. In the switch namespace: bridge netfilter off (it defaults to 1 in every new
   namespace, and would push bridged frames through that namespace's iptables and
   conntrack), IPv6 off.
3. In the switch namespace: the bridges, and one veth per bridge link, created there
   with its peer placed straight into the node's namespace, so no interface ever
   exists in the root namespace, even for an instant.
4. Point-to-point veths, created in one node's namespace with the peer in the other's.
5. Per node, sysctls (IPv6 off unless the topology asks for it, then the topology's
   own) before any interface is up, so no router solicitation or stray ARP leaks out.
6. Per node, one batch: ``lo`` up, MACs, addresses, interfaces up, routes.

Why iproute2 and not pyroute2: every step is the command a user would type to inspect
or repair a lab, errors come back as iproute2's own messages, and nothing switches
network namespaces inside this process (``setns`` from a threaded Python process is
fragile). Bring-up of the shipped topologies takes well under a second.

Removal (:func:`destroy`) needs no record: every namespace of lab ``L`` is named
``hl-L-*``. Processes inside them are found by namespace identity (the inode of
``/proc/PID/ns/net``, as ``ip netns pids`` does), never by name, and stopped before the
namespaces are deleted; a process left in a deleted namespace would keep it alive.
Deleting a namespace deletes its veths, and with them their peers in other namespaces.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from herder.lab.topology import SWITCH, Topology
from herder.proc import pid_start_time, run_sync, stop_pid

__all__ = [
    "NETNS_DIR",
    "NETNS_PREFIX",
    "LabError",
    "Step",
    "build_plan",
    "check_lab_name",
    "destroy",
    "lab_namespaces",
    "list_namespaces",
    "netns_name",
    "pids_in_namespaces",
    "run_plan",
]

log = logging.getLogger(__name__)

#: Where ``ip netns`` keeps its named namespaces.
NETNS_DIR = "/run/netns"
#: Every namespace herder's lab creates starts with this ("herder lab").
NETNS_PREFIX = "hl-"

_LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")

#: Seconds one ``ip``/``sysctl`` step may take before the bring-up is abandoned.
STEP_TIMEOUT_S = 20.0


class LabError(RuntimeError):
    """Building, using or removing a lab failed; the message carries the command's error."""


def check_lab_name(name: str) -> str:
    """Return ``name`` if it is a valid lab name (``[a-z][a-z0-9]{0,11}``), else raise LabError.

    No dash: the lab name is the second field of ``hl-<lab>-<node>``.
    """
    if not _LAB_NAME_RE.match(name):
        raise LabError(f"invalid lab name {name!r}: use a lowercase letter then up to 11 letters or digits")
    return name


def netns_name(lab: str, node: str) -> str:
    """The network namespace of ``node`` (or of the switch, ``node="switch"``) in ``lab``."""
    return f"{NETNS_PREFIX}{lab}-{node}"


def list_namespaces() -> list[str]:
    """Every named network namespace (``ip netns list``), sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def lab_namespaces(lab: str | None = None) -> dict[str, list[str]]:
    """The lab namespaces that exist now, by lab name (all labs, or only ``lab``)."""
    out: dict[str, list[str]] = {}
    for ns in list_namespaces():
        if not ns.startswith(NETNS_PREFIX):
            continue
        name, sep, _node = ns[len(NETNS_PREFIX):].partition("-")
        if not sep or not _LAB_NAME_RE.match(name) or (lab is not None and name != lab):
            continue
        out.setdefault(name, []).append(ns)
    return out


def _ns_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return None
    return (st.st_dev, st.st_ino)


def pids_in_namespaces(names: Iterable[str]) -> dict[str, list[int]]:
    """The PIDs of the processes living in each named namespace (like ``ip netns pids``).

    Only namespaces that exist appear in the result. Matching is by namespace identity,
    so it finds every process, whatever its name or parent.
    """
    ids: dict[tuple[int, int], str] = {}
    for ns in names:
        ident = _ns_identity(os.path.join(NETNS_DIR, ns))
        if ident is not None:
            ids[ident] = ns
    out: dict[str, list[int]] = {ns: [] for ns in ids.values()}
    if not ids:
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        ident = _ns_identity(f"/proc/{entry}/ns/net")
        if ident in ids:
            out[ids[ident]].append(int(entry))
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """One process to run: ``argv`` (inside ``netns`` if given), fed ``batch`` lines on stdin."""

    what: str
    argv: tuple[str, ...]
    netns: str | None = None
    batch: tuple[str, ...] = ()

    def command_line(self) -> str:
        """The step as a shell command line (for logs and error messages)."""
        prefix = f"ip netns exec {self.netns} " if self.netns else ""
        text = prefix + " ".join(self.argv)
        if self.batch:
            text += " <<EOF\n" + "\n".join(self.batch) + "\nEOF"
        return text


def _sysctl_step(what: str, ns: str, settings: Sequence[tuple[str, str]], *, ignore_missing: bool) -> Step:
    argv = ["sysctl", "-q"]
    if ignore_missing:
        argv.append("-e")
    argv += ["-w", *(f"{k}={v}" for k, v in settings)]
    return Step(what, tuple(argv), netns=ns)


def build_plan(topology: Topology, lab: str) -> list[Step]:
    """The ordered steps that build ``topology`` as lab ``lab`` (pure; see the module doc)."""
    check_lab_name(lab)
    sw = netns_name(lab, SWITCH)
    nsof = {n.name: netns_name(lab, n.name) for n in topology.nodes}
    steps: list[Step] = [
        Step("create namespaces", ("ip", "-batch", "-"),
             batch=tuple(f"netns add {ns}" for ns in [sw, *nsof.values()])),
        _sysctl_step("switch: bridge netfilter off", sw, [
            ("net.bridge.bridge-nf-call-iptables", "0"),
            ("net.bridge.bridge-nf-call-ip6tables", "0"),
            ("net.bridge.bridge-nf-call-arptables", "0"),
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ], ignore_missing=True),
    ]
    sw_batch = ["link set lo up"]
    for b in topology.bridges:
        opts = f" mcast_snooping {1 if b.multicast_snooping else 0}"
        if b.ageing_time_s is not None:
            opts += f" ageing_time {round(b.ageing_time_s * 100)}"  # centiseconds
        sw_batch += [f"link add {b.name} type bridge{opts}", f"link set {b.name} up"]
    links = topology.links
    for link in links:
        if link.bridge:
            node, ifname = link.a
            sw_batch += [
                f"link add {link.port} type veth peer name {ifname} netns {nsof[node]}",
                f"link set {link.port} master {link.bridge}",
                f"link set {link.port} up",
            ]
    steps.append(Step("switch: bridges and ports", ("ip", "-n", sw, "-batch", "-"), batch=tuple(sw_batch)))
    p2p: dict[str, list[str]] = {}
    for link in links:
        if link.b is not None:
            (an, aif), (bn, bif) = link.a, link.b
            p2p.setdefault(an, []).append(f"link add {aif} type veth peer name {bif} netns {nsof[bn]}")
    for node, lines in p2p.items():
        steps.append(Step(f"{node}: point-to-point links", ("ip", "-n", nsof[node], "-batch", "-"), batch=tuple(lines)))
    for n in topology.nodes:
        settings: list[tuple[str, str]] = []
        if not topology.ipv6:
            settings += [("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1")]
        settings += list(n.sysctls)
        if settings:
            steps.append(_sysctl_step(f"{n.name}: sysctls", nsof[n.name], settings, ignore_missing=False))
    for n in topology.nodes:
        lines = ["link set lo up"]
        for i in n.interfaces:
            if i.mac:
                lines.append(f"link set dev {i.name} address {i.mac}")
            for a in i.addresses:
                lines.append(f"addr add {a} dev {i.name}")
            if not i.is_loopback:
                lines.append(f"link set {i.name} up")
        for r in n.routes:
            lines.append("route add " + " ".join(r.ip_args()))
        steps.append(Step(f"{n.name}: addresses, links up, routes", ("ip", "-n", nsof[n.name], "-batch", "-"),
                          batch=tuple(lines)))
    return steps


def run_step(step: Step, *, timeout: float = STEP_TIMEOUT_S) -> None:
    """Run one step; LabError (with the command and its stderr) if it fails."""
    data = ("\n".join(step.batch) + "\n").encode() if step.batch else None
    try:
        res = run_sync(step.argv, netns=step.netns, input=data, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"{step.what}: timed out after {timeout:.0f}s: {step.command_line()}") from None
    except FileNotFoundError as e:
        raise LabError(f"{step.what}: {e.filename} not found (install iproute2 and procps)") from None
    if res.returncode != 0:
        err = (res.stderr or res.stdout).decode(errors="replace").strip()
        raise LabError(f"{step.what} failed (exit {res.returncode}): {err}\n  command: {step.command_line()}")


def run_plan(steps: Sequence[Step]) -> None:
    """Run ``steps`` in order; the first failure raises LabError (nothing is undone here)."""
    for step in steps:
        t0 = time.monotonic()
        run_step(step)
        log.debug("%s: %.1f ms", step.what, (time.monotonic() - t0) * 1000)


def destroy(lab: str, *, extra_pids: Iterable[int] = (), timeout: float = 2.0) -> list[str]:
    """Remove every namespace of ``lab`` (``hl-<lab>-*``) and every process inside them.

    Works from nothing but the name, so it also cleans up after a crash. ``extra_pids``
    are stopped first (recorded processes; pass start times through
    :func:`herder.proc.stop_pid` yourself if you have them). Returns the namespaces that
    were deleted. Raises LabError if a namespace cannot be deleted.
    """
    check_lab_name(lab)
    names = lab_namespaces(lab).get(lab, [])
    for pid in extra_pids:
        stop_pid(pid, timeout=timeout)
    # two rounds: a process may fork while the first round signals its siblings
    for _ in range(2):
        found = pids_in_namespaces(names)
        pids = [(pid, pid_start_time(pid)) for pid_list in found.values() for pid in pid_list]
        if not pids:
            break
        for pid, start in pids:
            log.debug("lab %s: stopping pid %d", lab, pid)
            stop_pid(pid, start_time=start, timeout=timeout)
    if names:
        run_step(Step(f"lab {lab}: delete namespaces", ("ip", "-force", "-batch", "-"),
                      batch=tuple(f"netns del {ns}" for ns in names)))
    left = lab_namespaces(lab).get(lab, [])
    if left:
        raise LabError(f"lab {lab}: namespaces still present after delete: {', '.join(left)}")
    return names
