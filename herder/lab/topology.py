"""Lab topologies: the declarative model and its loader (pure: no processes, no netlink).

Theory of operation
-------------------
A topology file is a small TOML document::

    description = "A client, a director and three real servers on one LAN."
    [vars]                       # free strings tests and demos may read (the VIP, ...)
    vip = "198.18.0.100"
    [bridges.lan]                # a switch port group; every bridge lives in the lab's switch netns
    [nodes.client]               # one network namespace per node
    role = "client"
    routes = ["default via 198.18.0.1"]
    sysctls = { "net.ipv4.ip_forward" = 1 }
    serve = { http = [80], echo = [9000] }      # herder's tiny name-answering servers
    [nodes.client.interfaces.eth0]
    bridge = "lan"                # a veth whose other end is a port of bridge "lan"
    addresses = ["198.18.0.10/24"]
    [nodes.router.interfaces.eth1]
    peer = "client.eth1"          # or a point-to-point veth to another node's interface
    [[nodes.client.processes]]    # any other program, started after the network is up
    name = "probe"
    argv = ["{python}", "-m", "mytool", "--node", "{node}"]
    ready_port = 8080             # optional: wait until it listens on this TCP port

The loader checks everything that can be checked without root (unknown keys, names and
their lengths, addresses inside 198.18.0.0/15, gateways on-link, links consistent) and
raises :class:`TopologyError` naming the offending key. What it produces is immutable;
building it is :mod:`herder.lab.netns`'s job.

Names: node names are ``[a-z][a-z0-9-]*`` up to 10 characters (``switch`` is reserved for
the lab's switch namespace); interface and bridge names ``[a-z][a-z0-9]*``. A bridge port
is named ``<node>-<interface>`` in the switch namespace, so that pair must fit in 15
characters (the kernel's interface name limit). Interface names are local to a node's
namespace and never exist in the root namespace, so they carry no lab prefix; the
namespaces do (see :func:`herder.lab.netns.netns_name`).
"""

from __future__ import annotations

import logging
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

__all__ = [
    "LAB_NETWORK",
    "Bridge",
    "Interface",
    "Node",
    "Process",
    "Route",
    "Topology",
    "TopologyError",
    "load_topology",
    "parse_topology",
    "resolve_topology",
    "shipped_topologies",
]

log = logging.getLogger(__name__)

#: Every lab address comes from the benchmarking range (RFC 2544 / RFC 6890).
LAB_NETWORK = IPv4Network("198.18.0.0/15")

#: Node name reserved for the lab's switch namespace (where the bridges live).
SWITCH = "switch"

#: Placeholders a process argv may use; filled in when the lab starts the process.
PLACEHOLDERS = frozenset({"python", "node", "lab", "netns", "state_dir"})

MAX_IFNAME = 15
MAX_NODE_NAME = 10

_NODE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_IF_RE = re.compile(r"^[a-z][a-z0-9]*$")
_SYSCTL_RE = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class TopologyError(ValueError):
    """A topology file or dict is invalid; the message names the key (``nodes.rs1.routes[0]``)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One static route of a node: ``dst`` is ``"default"`` or a network."""

    dst: str
    via: IPv4Address | None = None
    dev: str | None = None

    def ip_args(self) -> list[str]:
        """The arguments after ``ip route add``."""
        args = [self.dst]
        if self.via is not None:
            args += ["via", str(self.via)]
        if self.dev is not None:
            args += ["dev", self.dev]
        return args

    def __str__(self) -> str:
        return " ".join(self.ip_args())


@dataclass(frozen=True, slots=True)
class Interface:
    """A node's interface: a veth to a bridge port or to another node, or ``lo``."""

    name: str
    addresses: tuple[IPv4Interface, ...] = ()
    bridge: str | None = None
    #: (node, interface) at the other end of a point-to-point veth.
    peer: tuple[str, str] | None = None
    mac: str | None = None

    @property
    def is_loopback(self) -> bool:
        return self.name == "lo"


@dataclass(frozen=True, slots=True)
class Process:
    """A program the lab starts in a node once the network is up."""

    name: str
    argv: tuple[str, ...]
    #: TCP ports the process must listen on before the lab counts as up.
    ready_ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Node:
    """One host of the lab: a network namespace with interfaces, routes, sysctls, processes."""

    name: str
    role: str = ""
    region: str = ""
    description: str = ""
    interfaces: tuple[Interface, ...] = ()
    routes: tuple[Route, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    processes: tuple[Process, ...] = ()

    def interface(self, name: str) -> Interface:
        """The interface called ``name``; KeyError if the node has none."""
        for i in self.interfaces:
            if i.name == name:
                return i
        raise KeyError(f"node {self.name} has no interface {name}")

    @property
    def addresses(self) -> tuple[IPv4Interface, ...]:
        """Every address of the node, interfaces in file order (``lo`` last)."""
        ordered = [i for i in self.interfaces if not i.is_loopback] + [
            i for i in self.interfaces if i.is_loopback
        ]
        return tuple(a for i in ordered for a in i.addresses)

    @property
    def address(self) -> IPv4Address | None:
        """The node's first address on a non-loopback interface (what others reach it by)."""
        for i in self.interfaces:
            if not i.is_loopback and i.addresses:
                return i.addresses[0].ip
        return None


@dataclass(frozen=True, slots=True)
class Bridge:
    """A bridge (switch) in the lab's switch namespace."""

    name: str
    description: str = ""
    #: FDB ageing in seconds; 0 makes the bridge a hub (it floods all unicast).
    ageing_time_s: float | None = None
    multicast_snooping: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    """A veth pair: node interface ``a`` to bridge ``bridge`` (port name ``port``) or to ``b``."""

    a: tuple[str, str]
    bridge: str | None = None
    b: tuple[str, str] | None = None

    @property
    def port(self) -> str | None:
        """The bridge port's interface name in the switch namespace (bridge links only)."""
        return f"{self.a[0]}-{self.a[1]}" if self.bridge else None


@dataclass(frozen=True, slots=True)
class Topology:
    """A validated topology. ``data`` is the raw document, kept to rebuild it elsewhere."""

    name: str
    description: str = ""
    nodes: tuple[Node, ...] = ()
    bridges: tuple[Bridge, ...] = ()
    ipv6: bool = False
    vars: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def node(self, name: str) -> Node:
        """The node called ``name``; KeyError (listing the known names) if there is none."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"topology {self.name} has no node {name!r} (nodes: {', '.join(self.node_names)})")

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def links(self) -> tuple[Link, ...]:
        """Every veth pair, bridge links first, each point-to-point pair once."""
        out: list[Link] = []
        seen: set[tuple[str, str]] = set()
        for n in self.nodes:
            for i in n.interfaces:
                if i.bridge:
                    out.append(Link(a=(n.name, i.name), bridge=i.bridge))
        for n in self.nodes:
            for i in n.interfaces:
                if i.peer and (n.name, i.name) not in seen:
                    seen.add((n.name, i.name))
                    seen.add(i.peer)
                    out.append(Link(a=(n.name, i.name), b=i.peer))
        return tuple(out)

    def nodes_with_role(self, role: str) -> list[Node]:
        return [n for n in self.nodes if n.role == role]


# --- loading -------------------------------------------------------------------------

_TOP_KEYS = {"name", "description", "ipv6", "vars", "bridges", "nodes"}
_NODE_KEYS = {"role", "region", "description", "interfaces", "routes", "sysctls", "processes", "serve"}
_IF_KEYS = {"bridge", "peer", "addresses", "mac"}
_BRIDGE_KEYS = {"description", "ageing_time", "multicast_snooping"}
_PROC_KEYS = {"name", "argv", "ready_port"}
_SERVE_KEYS = {"http", "echo"}


def _check_keys(where: str, table: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise TopologyError(f"{where}: expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise TopologyError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    return table


def _str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TopologyError(f"{where}: expected a string, got {value!r}")
    return value


def _str_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TopologyError(f"{where}: expected a list of strings, got {value!r}")
    return value


def _port(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise TopologyError(f"{where}: expected a TCP port 1..65535, got {value!r}")
    return value


def _lab_address(where: str, text: str, *, interface: bool) -> Any:
    try:
        value = IPv4Interface(text) if interface else IPv4Address(text)
    except ValueError as e:
        raise TopologyError(f"{where}: {e}") from None
    ip = value.ip if interface else value
    if ip not in LAB_NETWORK:
        raise TopologyError(f"{where}: {text} is outside the lab range {LAB_NETWORK}")
    return value


def _parse_route(where: str, text: str, ifnames: set[str]) -> Route:
    words = text.split()
    if not words:
        raise TopologyError(f"{where}: empty route")
    dst = words[0]
    if dst != "default":
        try:
            net = IPv4Network(dst)
        except ValueError as e:
            raise TopologyError(f"{where}: {e}") from None
        if not net.subnet_of(LAB_NETWORK):
            raise TopologyError(f"{where}: {dst} is outside the lab range {LAB_NETWORK}")
        dst = str(net)
    via: IPv4Address | None = None
    dev: str | None = None
    rest = words[1:]
    if len(rest) % 2:
        raise TopologyError(f"{where}: expected '<dst> [via <gateway>] [dev <interface>]', got {text!r}")
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        if key == "via" and via is None:
            via = _lab_address(where, value, interface=False)
        elif key == "dev" and dev is None:
            if value not in ifnames:
                raise TopologyError(f"{where}: dev {value} is not an interface of this node")
            dev = value
        else:
            raise TopologyError(f"{where}: unexpected {key!r} in {text!r} (use via, dev)")
    if via is None and dev is None:
        raise TopologyError(f"{where}: a route needs 'via <gateway>' or 'dev <interface>'")
    return Route(dst, via, dev)


def _check_placeholders(where: str, argv: list[str]) -> None:
    for arg in argv:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(arg) if f is not None}
        except ValueError as e:
            raise TopologyError(f"{where}: {arg!r}: {e}") from None
        bad = sorted(n for n in names if n not in PLACEHOLDERS)
        if bad:
            raise TopologyError(
                f"{where}: unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)} "
                f"(known: {', '.join(sorted(PLACEHOLDERS))}; write {{{{ and }}}} for braces)"
            )


def serve_argv(http: list[int], echo: list[int]) -> tuple[str, ...]:
    """The argv (with placeholders) of herder's tiny name-answering server."""
    argv = ["{python}", "-m", "herder.lab.serve", "--name", "{node}", "--lab", "{lab}"]
    for p in http:
        argv += ["--http", str(p)]
    for p in echo:
        argv += ["--echo", str(p)]
    return tuple(argv)


def _parse_interface(where: str, name: str, raw: Any) -> Interface:
    t = _check_keys(where, raw, _IF_KEYS)
    if name != "lo" and (not _IF_RE.match(name) or len(name) > MAX_IFNAME):
        raise TopologyError(f"{where}: interface name must match [a-z][a-z0-9]* and be at most {MAX_IFNAME} chars")
    addresses = tuple(
        _lab_address(f"{where}.addresses[{k}]", a, interface=True)
        for k, a in enumerate(_str_list(f"{where}.addresses", t.get("addresses", [])))
    )
    bridge = t.get("bridge")
    peer_text = t.get("peer")
    mac = t.get("mac")
    if name == "lo":
        if bridge is not None or peer_text is not None or mac is not None:
            raise TopologyError(f"{where}: lo takes addresses only")
        return Interface("lo", addresses)
    if bridge is not None and peer_text is not None:
        raise TopologyError(f"{where}: give either bridge or peer, not both")
    peer: tuple[str, str] | None = None
    if peer_text is not None:
        node, _, ifname = _str(f"{where}.peer", peer_text).partition(".")
        if not node or not ifname:
            raise TopologyError(f"{where}.peer: expected 'node.interface', got {peer_text!r}")
        peer = (node, ifname)
    if mac is not None:
        mac = _str(f"{where}.mac", mac).lower()
        if not _MAC_RE.match(mac) or int(mac[:2], 16) & 1:
            raise TopologyError(f"{where}.mac: expected a unicast MAC like 02:00:00:00:00:01, got {mac!r}")
    return Interface(name, addresses, _str(f"{where}.bridge", bridge) if bridge is not None else None, peer, mac)


def _parse_node(where: str, name: str, raw: Any) -> Node:
    t = _check_keys(where, raw, _NODE_KEYS)
    if not _NODE_RE.match(name) or len(name) > MAX_NODE_NAME:
        raise TopologyError(f"{where}: node name must match [a-z][a-z0-9-]* and be at most {MAX_NODE_NAME} chars")
    if name == SWITCH:
        raise TopologyError(f"{where}: the node name {SWITCH!r} is reserved for the lab's switch namespace")
    interfaces = tuple(
        _parse_interface(f"{where}.interfaces.{k}", k, v)
        for k, v in _check_keys(f"{where}.interfaces", t.get("interfaces", {}), set(t.get("interfaces", {}))).items()
    )
    ifnames = {i.name for i in interfaces} | {"lo"}
    routes = tuple(
        _parse_route(f"{where}.routes[{k}]", r, ifnames)
        for k, r in enumerate(_str_list(f"{where}.routes", t.get("routes", [])))
    )
    sysctls_raw = t.get("sysctls", {})
    if not isinstance(sysctls_raw, Mapping):
        raise TopologyError(f"{where}.sysctls: expected a table of key = value")
    sysctls: list[tuple[str, str]] = []
    for k, v in sysctls_raw.items():
        if not _SYSCTL_RE.match(k):
            raise TopologyError(f"{where}.sysctls: {k!r} is not a sysctl key (dotted, like net.ipv4.ip_forward)")
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, int | str):
            raise TopologyError(f"{where}.sysctls.{k}: expected an integer or a string, got {v!r}")
        sysctls.append((k, str(v)))
    processes: list[Process] = []
    if "serve" in t:
        s = _check_keys(f"{where}.serve", t["serve"], _SERVE_KEYS)
        http = [_port(f"{where}.serve.http", p) for p in s.get("http", [])]
        echo = [_port(f"{where}.serve.echo", p) for p in s.get("echo", [])]
        if not http and not echo:
            raise TopologyError(f"{where}.serve: give http and/or echo ports")
        if len(set(http + echo)) != len(http + echo):
            raise TopologyError(f"{where}.serve: a port is listed twice")
        processes.append(Process("serve", serve_argv(http, echo), tuple(http + echo)))
    raw_procs = t.get("processes", [])
    if not isinstance(raw_procs, list):
        raise TopologyError(f"{where}.processes: expected an array of tables ([[nodes.{name}.processes]])")
    for k, p in enumerate(raw_procs):
        pw = f"{where}.processes[{k}]"
        pt = _check_keys(pw, p, _PROC_KEYS)
        if "name" not in pt or "argv" not in pt:
            raise TopologyError(f"{pw}: needs name and argv")
        pname = _str(f"{pw}.name", pt["name"])
        if not _NODE_RE.match(pname):
            raise TopologyError(f"{pw}.name: must match [a-z][a-z0-9-]*")
        argv = _str_list(f"{pw}.argv", pt["argv"])
        if not argv:
            raise TopologyError(f"{pw}.argv: empty")
        _check_placeholders(f"{pw}.argv", argv)
        ready = pt.get("ready_port")
        ports = (_port(f"{pw}.ready_port", ready),) if ready is not None else ()
        processes.append(Process(pname, tuple(argv), ports))
    names = [p.name for p in processes]
    if len(set(names)) != len(names):
        raise TopologyError(f"{where}.processes: process names must be unique in a node (serve counts as one)")
    return Node(
        name=name,
        role=_str(f"{where}.role", t.get("role", "")),
        region=_str(f"{where}.region", t.get("region", "")),
        description=_str(f"{where}.description", t.get("description", "")),
        interfaces=interfaces,
        routes=routes,
        sysctls=tuple(sysctls),
        processes=tuple(processes),
    )


def _parse_bridge(where: str, name: str, raw: Any) -> Bridge:
    t = _check_keys(where, raw, _BRIDGE_KEYS)
    if not _IF_RE.match(name) or len(name) > MAX_IFNAME:
        raise TopologyError(f"{where}: bridge name must match [a-z][a-z0-9]* and be at most {MAX_IFNAME} chars")
    ageing = t.get("ageing_time")
    if ageing is not None and (isinstance(ageing, bool) or not isinstance(ageing, int | float) or ageing < 0):
        raise TopologyError(f"{where}.ageing_time: expected seconds >= 0 (0 = flood everything), got {ageing!r}")
    snooping = t.get("multicast_snooping", False)
    if not isinstance(snooping, bool):
        raise TopologyError(f"{where}.multicast_snooping: expected true or false")
    return Bridge(name, _str(f"{where}.description", t.get("description", "")), ageing, snooping)


def _check_links(nodes: list[Node], bridges: list[Bridge]) -> None:
    by_name = {n.name: n for n in nodes}
    bridge_names = {b.name for b in bridges}
    used_bridges: set[str] = set()
    for n in nodes:
        for i in n.interfaces:
            where = f"nodes.{n.name}.interfaces.{i.name}"
            if i.is_loopback:
                continue
            if i.bridge is not None:
                if i.bridge not in bridge_names:
                    raise TopologyError(f"{where}.bridge: no bridge {i.bridge!r} (bridges: {', '.join(sorted(bridge_names)) or 'none'})")
                used_bridges.add(i.bridge)
                port = f"{n.name}-{i.name}"
                if len(port) > MAX_IFNAME:
                    raise TopologyError(
                        f"{where}: the bridge port name {port!r} would exceed {MAX_IFNAME} characters; "
                        "shorten the node or interface name"
                    )
            elif i.peer is not None:
                pnode, pif = i.peer
                if pnode == n.name:
                    raise TopologyError(f"{where}.peer: a node cannot be linked to itself")
                if pnode not in by_name:
                    raise TopologyError(f"{where}.peer: no node {pnode!r}")
                try:
                    other = by_name[pnode].interface(pif)
                except KeyError:
                    raise TopologyError(
                        f"{where}.peer: node {pnode} has no interface {pif!r}; declare "
                        f"[nodes.{pnode}.interfaces.{pif}] (with its addresses)"
                    ) from None
                if other.bridge is not None or other.is_loopback:
                    raise TopologyError(f"{where}.peer: {pnode}.{pif} is not free for a point-to-point link")
                if other.peer is not None and other.peer != (n.name, i.name):
                    raise TopologyError(f"{where}.peer: {pnode}.{pif} already peers with {'.'.join(other.peer)}")
            else:
                # the other side may declare the link
                if not any(
                    j.peer == (n.name, i.name) for m in nodes for j in m.interfaces
                ):
                    raise TopologyError(f"{where}: give bridge = \"...\" or peer = \"node.interface\"")
    unused = bridge_names - used_bridges
    if unused:
        raise TopologyError(f"bridges: {', '.join(sorted(unused))} not used by any interface")


def _check_addresses(nodes: list[Node]) -> None:
    owner: dict[IPv4Address, str] = {}
    for n in nodes:
        for i in n.interfaces:
            for a in i.addresses:
                where = f"nodes.{n.name}.interfaces.{i.name}"
                if a.ip == a.network.network_address and a.network.prefixlen < 31:
                    raise TopologyError(f"{where}: {a} is a network address")
                if a.ip == a.network.broadcast_address and a.network.prefixlen < 31:
                    raise TopologyError(f"{where}: {a} is a broadcast address")
                if i.is_loopback:
                    continue  # VIPs on lo may be shared (DSR real servers, distributed nodes)
                if a.ip in owner:
                    raise TopologyError(f"{where}: {a.ip} is already used by {owner[a.ip]}")
                owner[a.ip] = f"{n.name}.{i.name}"
        onlink = [a.network for i in n.interfaces if not i.is_loopback for a in i.addresses]
        for k, r in enumerate(n.routes):
            if r.via is not None and r.dev is None and not any(r.via in net for net in onlink):
                raise TopologyError(
                    f"nodes.{n.name}.routes[{k}]: gateway {r.via} is not on any of the node's subnets "
                    f"({', '.join(map(str, onlink)) or 'none'})"
                )


def parse_topology(data: Mapping[str, Any], *, name: str = "", source: str = "") -> Topology:
    """Validate a topology document (the TOML already parsed into dicts).

    ``name`` is used when the document has no ``name`` key (the loader passes the file
    stem). Raises :class:`TopologyError` for anything invalid.
    """
    top = _check_keys("topology", data, _TOP_KEYS)
    tname = _str("name", top.get("name", name)) or "topology"
    ipv6 = top.get("ipv6", False)
    if not isinstance(ipv6, bool):
        raise TopologyError("ipv6: expected true or false")
    raw_vars = top.get("vars", {})
    if not isinstance(raw_vars, Mapping) or not all(isinstance(v, str | int) for v in raw_vars.values()):
        raise TopologyError("vars: expected a table of strings")
    bridges = [
        _parse_bridge(f"bridges.{k}", k, v)
        for k, v in _check_keys("bridges", top.get("bridges", {}), set(top.get("bridges", {}))).items()
    ]
    raw_nodes = _check_keys("nodes", top.get("nodes", {}), set(top.get("nodes", {})))
    if not raw_nodes:
        raise TopologyError("nodes: a topology needs at least one node")
    nodes = [_parse_node(f"nodes.{k}", k, v) for k, v in raw_nodes.items()]
    _check_links(nodes, bridges)
    _check_addresses(nodes)
    return Topology(
        name=tname,
        description=_str("description", top.get("description", "")),
        nodes=tuple(nodes),
        bridges=tuple(bridges),
        ipv6=ipv6,
        vars={k: str(v) for k, v in raw_vars.items()},
        source=source,
        data=dict(data),
    )


def load_topology(path: str | Path) -> Topology:
    """Load and validate a topology file; :class:`TopologyError` says what is wrong."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise TopologyError(f"{p}: {e}") from None
    except OSError as e:
        raise TopologyError(f"{p}: {e.strerror}") from None
    try:
        return parse_topology(data, name=p.stem, source=str(p))
    except TopologyError as e:
        raise TopologyError(f"{p}: {e}") from None


def _shipped_dir() -> Path:
    return Path(str(resources.files("herder.lab") / "topologies"))


def shipped_topologies() -> dict[str, Path]:
    """The topologies shipped with herder, by name."""
    d = _shipped_dir()
    return {p.stem: p for p in sorted(d.glob("*.toml"))}


def resolve_topology(spec: str | Path | Topology) -> Topology:
    """A :class:`Topology` from a shipped name (``flat``), a file path, or a Topology.

    A string containing ``/`` or ending in ``.toml`` is a path; anything else is looked
    up among the shipped topologies first, then as a path.
    """
    if isinstance(spec, Topology):
        return spec
    text = str(spec)
    shipped = shipped_topologies()
    if "/" not in text and not text.endswith(".toml"):
        if text in shipped:
            return load_topology(shipped[text])
        if not Path(text).exists():
            raise TopologyError(f"no shipped topology {text!r} (shipped: {', '.join(shipped)}) and no such file")
    return load_topology(text)
