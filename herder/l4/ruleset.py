"""The L4 director's typed model: what is declared (:class:`VirtualServiceSpec`) and what the
kernel is told (:class:`Ruleset`).

Theory of operation
-------------------
A *virtual service* is what ipvsadm calls a service and keepalived a ``virtual_server``: a
protocol, a VIP and a port, a forwarding method, a scheduler and optional persistence,
backed by one of herder's pools. :class:`VirtualServiceSpec` is that declaration, from any
source (native TOML, ``ipvsadm`` commands, keepalived.conf); it carries no server.

:func:`herder.l4.plan.plan` combines the specs with a pool snapshot into a
:class:`Ruleset`: every *destination* (one server of one virtual service, with a stable
numeric id) and, per virtual service, its scheduling table (slot -> destination id) and
the set of destinations that may keep existing flows. The ruleset is plain immutable data:
the nftables renderer turns it into tables and maps, the userspace relay picks from the
same tables, ``herder ipvsadm -L`` prints it.

Destination ids are packet/conntrack marks: ``MARK_BASE | n``. The scheduling map yields
the id; the NAT rule stores it in the conntrack mark (so persistence, statistics and
``ipvsadm -L -c`` know the destination of every connection) and translates it to the
real server's address through one map. Ids are never reused within a run
(:attr:`Ruleset.next_id`), so an old conntrack entry never names a new server.

This module is pure: no I/O.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "DEFAULT_SEED",
    "MARK_BASE",
    "MARK_MASK",
    "Dest",
    "Forward",
    "Ruleset",
    "Scheduler",
    "VirtualService",
    "VirtualServiceSpec",
    "ruleset_from_json",
    "ruleset_to_json",
    "service_key",
    "spec_from_json",
    "spec_to_json",
]

#: Destination ids live in this mark range (``0x48`` is "H"); other users of marks in the
#: director's namespace must stay clear of it.
MARK_BASE = 0x48000000
MARK_MASK = 0xFF000000
#: The default jhash seed: explicit and fixed, so a reload or a second director computes
#: the same flow -> slot mapping (nft picks a random seed per rule when none is given).
DEFAULT_SEED = 0x48455244

PROTOCOLS = ("tcp", "udp")


class Forward(enum.Enum):
    """Forwarding method (ipvsadm ``-m``, ``-g``, ``-i``; keepalived ``lb_kind``)."""

    #: Masquerading: DNAT with conntrack; replies return through the director.
    NAT = "nat"
    #: Direct routing / direct server return: only the MAC addresses are rewritten.
    DR = "dr"
    #: IP-in-IP tunnelling (not available on kernels without CONFIG_NET_IPIP).
    TUN = "tun"

    @property
    def ipvs_name(self) -> str:
        """The word ``ipvsadm -L`` prints in the Forward column."""
        return {"nat": "Masq", "dr": "Route", "tun": "Tunnel"}[self.value]

    @property
    def ipvs_switch(self) -> str:
        """The ipvsadm option that selects it."""
        return {"nat": "-m", "dr": "-g", "tun": "-i"}[self.value]


class Scheduler(enum.Enum):
    """Schedulers the kernel path implements (ipvsadm names)."""

    RR = "rr"
    WRR = "wrr"
    SH = "sh"
    DH = "dh"
    MH = "mh"

    @property
    def hashing(self) -> bool:
        return self in (Scheduler.SH, Scheduler.DH, Scheduler.MH)


#: What a hashing scheduler hashes: the source address, the source address and port
#: (ipvsadm ``-b sh-port``/``mh-port``), or the destination address (``dh``).
HASH_KEYS = ("source", "flow", "destination")


def service_key(proto: str, vip: str, port: int) -> str:
    """The identity of a virtual service: ``tcp:198.18.0.100:80``."""
    return f"{proto}:{vip}:{port}"


@dataclass(frozen=True, slots=True)
class VirtualServiceSpec:
    """One declared virtual service (no servers: those come from the pool).

    ``name`` is herder's service name (several specs may share it: one per listen
    address). ``persistence_s`` 0 means no persistence; ``netmask`` is the persistence
    granularity (ipvsadm ``-M``). ``on_failure`` says what a server failing its health
    checks becomes: ``remove`` (out of every table; its flows are rescheduled) or
    ``quiesce`` (weight 0: no new flows, existing ones continue; keepalived
    ``inhibit_on_failure``). ``ingress_device``/``egress_device`` are used by DR only
    (filled in by the director when not configured). ``table_size`` is the Maglev table
    size (a prime). ``flags`` are ipvsadm scheduler flags (``sh-port``, ``mh-port``,
    ``sh-fallback``, ``mh-fallback``), kept for ``-L``/``-S``.

    Raises:
        ValueError: any field out of range (a bad address, port, weight, scheduler...).
    """

    name: str
    proto: str
    vip: str
    port: int
    pool: str
    forward: Forward = Forward.NAT
    scheduler: Scheduler = Scheduler.WRR
    hash_key: str = "source"
    persistence_s: int = 0
    netmask: str = "255.255.255.255"
    on_failure: str = "remove"
    table_size: int = 65537
    ingress_device: str | None = None
    egress_device: str | None = None
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.proto not in PROTOCOLS:
            raise ValueError(f"protocol {self.proto!r} is not tcp or udp")
        try:
            addr = ipaddress.ip_address(self.vip)
        except ValueError:
            raise ValueError(f"virtual address {self.vip!r} is not an IP address") from None
        if addr.version != 4:
            raise ValueError(f"virtual address {self.vip}: only IPv4 is supported by the L4 director")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is outside 1..65535")
        if self.hash_key not in HASH_KEYS:
            raise ValueError(f"hash {self.hash_key!r} is not one of {', '.join(HASH_KEYS)}")
        if self.persistence_s < 0 or self.persistence_s > 31 * 86400:
            raise ValueError(f"persistence timeout {self.persistence_s} is outside 0..2678400 s")
        try:
            mask = ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}")
        except ValueError:
            raise ValueError(f"persistence netmask {self.netmask!r} is not an IPv4 netmask") from None
        if str(mask.netmask) != self.netmask:
            object.__setattr__(self, "netmask", str(mask.netmask))
        if self.on_failure not in ("remove", "quiesce"):
            raise ValueError(f"on_failure {self.on_failure!r} is not remove or quiesce")
        if self.table_size < 3 or any(self.table_size % d == 0 for d in range(2, int(self.table_size ** 0.5) + 1)):
            raise ValueError(f"table size {self.table_size} is not a prime >= 3")

    @property
    def key(self) -> str:
        return service_key(self.proto, self.vip, self.port)

    @property
    def prefix_len(self) -> int:
        return ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}").prefixlen


@dataclass(frozen=True, slots=True)
class Dest:
    """One real server of one virtual service, as programmed.

    ``weight`` is the weight for new flows (0: quiesced, still listed and still carrying
    its existing flows); ``declared_weight`` what the configuration or ipvsadm said.
    """

    id: int
    service: str
    server: str
    address: str
    port: int
    weight: int
    declared_weight: int
    forward: Forward

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class VirtualService:
    """One virtual service as programmed: the spec, its destinations and its tables.

    ``table`` maps slot -> destination id (empty when nothing may take new flows);
    rr/wrr walk it with a counter, the hashing schedulers index it with a hash.
    ``alive`` holds the destinations whose existing flows, persistence entries and (DR)
    flow-table entries stay valid: those taking new flows plus the quiesced ones.
    """

    spec: VirtualServiceSpec
    dests: tuple[Dest, ...]
    table: tuple[int, ...]
    alive: frozenset[int]

    @property
    def key(self) -> str:
        return self.spec.key

    def dest(self, server: str) -> Dest | None:
        for d in self.dests:
            if d.server == server:
                return d
        return None


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything the director programs, in one immutable value.

    ``services`` are sorted by key. ``next_id`` is the next unused destination number;
    ``ids`` remembers the id of every (service key, server name) ever planned in this run
    that is still present, so a destination keeps its id across updates. ``problems`` are
    operator-facing notes (a server with a host name, a DR port mismatch) about things
    the plan left out or changed.
    """

    services: tuple[VirtualService, ...] = ()
    table: str = "herder"
    seed: int = DEFAULT_SEED
    next_id: int = 1
    ids: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    problems: tuple[str, ...] = ()
    #: Timeouts of the DR flow table (seconds): established TCP, TCP after FIN/RST, UDP.
    flow_timeouts: tuple[int, int, int] = (900, 120, 300)

    def service(self, key: str) -> VirtualService | None:
        for s in self.services:
            if s.key == key:
                return s
        return None

    @property
    def dests(self) -> tuple[Dest, ...]:
        return tuple(d for s in self.services for d in s.dests)

    def dest_by_id(self, ident: int) -> Dest | None:
        for d in self.dests:
            if d.id == ident:
                return d
        return None


# --------------------------------------------------------------------------- JSON


def spec_to_json(spec: VirtualServiceSpec) -> dict[str, object]:
    """A spec as plain JSON data (the inverse of :func:`spec_from_json`)."""
    return {
        "name": spec.name, "proto": spec.proto, "vip": spec.vip, "port": spec.port, "pool": spec.pool,
        "forward": spec.forward.value, "scheduler": spec.scheduler.value, "hash_key": spec.hash_key,
        "persistence_s": spec.persistence_s, "netmask": spec.netmask, "on_failure": spec.on_failure,
        "table_size": spec.table_size, "ingress_device": spec.ingress_device,
        "egress_device": spec.egress_device, "flags": list(spec.flags),
    }


def spec_from_json(d: Mapping[str, object]) -> VirtualServiceSpec:
    """Raises ValueError (or KeyError/TypeError) on data that is not a spec."""
    return VirtualServiceSpec(
        name=str(d["name"]), proto=str(d["proto"]), vip=str(d["vip"]), port=int(d["port"]),  # type: ignore[call-overload]
        pool=str(d["pool"]), forward=Forward(d["forward"]), scheduler=Scheduler(d["scheduler"]),
        hash_key=str(d.get("hash_key", "source")), persistence_s=int(d.get("persistence_s", 0)),  # type: ignore[call-overload]
        netmask=str(d.get("netmask", "255.255.255.255")), on_failure=str(d.get("on_failure", "remove")),
        table_size=int(d.get("table_size", 65537)),  # type: ignore[call-overload]
        ingress_device=d.get("ingress_device") or None, egress_device=d.get("egress_device") or None,  # type: ignore[arg-type]
        flags=tuple(d.get("flags", ()) or ()),  # type: ignore[arg-type]
    )


def ruleset_to_json(rs: Ruleset, *, tables: bool = False) -> dict[str, object]:
    """The ruleset as JSON data; scheduling tables only with ``tables`` (a Maglev table
    is 65537 numbers), their lengths always."""
    return {
        "table": rs.table, "seed": rs.seed, "next_id": rs.next_id, "flow_timeouts": list(rs.flow_timeouts),
        "ids": [[k[0], k[1], v] for k, v in sorted(rs.ids.items())],
        "problems": list(rs.problems),
        "services": [{
            "spec": spec_to_json(s.spec),
            "dests": [{"id": d.id, "server": d.server, "address": d.address, "port": d.port, "weight": d.weight,
                       "declared_weight": d.declared_weight} for d in s.dests],
            "alive": sorted(s.alive),
            "table_len": len(s.table),
            **({"table": list(s.table)} if tables else {}),
        } for s in rs.services],
    }


def ruleset_from_json(d: Mapping[str, object]) -> Ruleset:
    """The inverse of :func:`ruleset_to_json` (tables empty unless they were saved)."""
    services = []
    for sd in d.get("services", ()):  # type: ignore[attr-defined]
        spec = spec_from_json(sd["spec"])
        dests = tuple(Dest(int(x["id"]), spec.key, str(x["server"]), str(x["address"]), int(x["port"]),
                           int(x["weight"]), int(x["declared_weight"]), spec.forward) for x in sd["dests"])
        services.append(VirtualService(spec, dests, tuple(sd.get("table", ())), frozenset(sd.get("alive", ()))))
    ids = {(str(a), str(b)): int(c) for a, b, c in d.get("ids", ())}  # type: ignore[attr-defined]
    return Ruleset(
        services=tuple(services), table=str(d.get("table", "herder")), seed=int(d.get("seed", DEFAULT_SEED)),  # type: ignore[call-overload]
        next_id=int(d.get("next_id", 1)), ids=MappingProxyType(ids),  # type: ignore[call-overload]
        problems=tuple(d.get("problems", ())),  # type: ignore[arg-type]
        flow_timeouts=tuple(d.get("flow_timeouts", (900, 120, 300))),  # type: ignore[arg-type]
    )
