"""The ``[vrrp]`` configuration section: instances, scripts and sync groups.

Native TOML (docs/vrrp.md has every key); the key names are keepalived's, so a
keepalived.conf and a herder.toml say the same things with the same words::

    [vrrp]
    version = 2                        # keepalived's vrrp_version (IPv6 instances use 3)

    [vrrp.scripts.chk_haproxy]
    script = "killall -0 haproxy"      # exit status 0: OK
    interval = 2
    weight = 2

    [vrrp.instances.VI_1]
    interface = "eth0"
    state = "MASTER"
    virtual_router_id = 51
    priority = 101
    virtual_ipaddress = ["192.168.1.1"]
    track_script = ["chk_haproxy"]     # or [{ name = "chk_haproxy", weight = -20 }]

    [vrrp.sync_groups.G1]
    group = ["VI_1", "VI_2"]

The keepalived.conf importer (:mod:`herder.ha.keepalived_conf`) builds the same raw
tables and parses them with this same schema, so both formats are checked by one set of
rules, and every error names its file, line and key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from herder.config.schema import (
    INVALID,
    Bool,
    Ctx,
    Duration,
    Field,
    Float,
    Int,
    ListOf,
    MapOf,
    OneOf,
    Parsed,
    Path,
    Spec,
    Str,
    Table,
)
from herder.ha.vrrp.machine import GarpPolicy
from herder.pool.model import frozen_map

__all__ = [
    "InstanceSpec",
    "ScriptSpec",
    "SyncGroupSpec",
    "TrackRef",
    "TrackService",
    "VipSpec",
    "VrrpSettings",
    "VRRP_SECTION",
    "parse_vip",
]

NAME = r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*"
IFNAME = r"[A-Za-z0-9_.:@-]{1,15}"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True, slots=True)
class VipSpec:
    """One virtual address: ``198.18.0.100/24 dev eth0 label eth0:1``.

    Without a prefix length the address is a host address (/32, /128), as in keepalived.
    ``dev`` None: the instance's interface (or its VMAC).
    """

    interface: IPInterface
    dev: str | None = None
    label: str | None = None

    @property
    def ip(self) -> IPAddress:
        return self.interface.ip

    def __str__(self) -> str:
        out = str(self.interface)
        if self.dev:
            out += f" dev {self.dev}"
        if self.label:
            out += f" label {self.label}"
        return out


def parse_vip(text: str) -> VipSpec:
    """``ADDR[/LEN] [dev IF] [label LABEL]``; ValueError with the reason otherwise."""
    words = text.split()
    if not words:
        raise ValueError("empty address")
    try:
        iface = ipaddress.ip_interface(words[0])
    except ValueError as e:
        raise ValueError(f"{words[0]!r} is not an address: {e}") from None
    opts: dict[str, str] = {}
    rest = words[1:]
    while rest:
        k = rest.pop(0)
        if k not in ("dev", "label") or not rest:
            raise ValueError(f"unsupported virtual_ipaddress option {k!r} (herder reads: dev IF, label LABEL)")
        opts[k] = rest.pop(0)
    if "dev" in opts and not re.fullmatch(IFNAME, opts["dev"]):
        raise ValueError(f"bad interface name {opts['dev']!r}")
    return VipSpec(iface, opts.get("dev"), opts.get("label"))


@dataclass(frozen=True, slots=True)
class ScriptSpec:
    """A ``vrrp_script``: a command whose exit status says whether something works."""

    name: str
    script: str
    interval_s: float = 1.0
    #: None: the interval (keepalived's default).
    timeout_s: float | None = None
    #: 0: a failure puts the tracking instances in FAULT; >0 added while OK; <0 added while KO.
    weight: int = 0
    reverse: bool = False
    rise: int = 1
    fall: int = 1
    #: Start in the failed state (keepalived ``init_fail``); default: OK until a check fails.
    init_fail: bool = False


@dataclass(frozen=True, slots=True)
class TrackRef:
    """A tracked script or interface of an instance, with the weight that applies to it."""

    name: str
    #: None: the script's own weight (scripts); 0 for interfaces.
    weight: int | None = None
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class TrackService:
    """herder's own data plane as a tracked object: a service (or pool) with at least
    ``min_up`` usable servers in the pool state is OK."""

    service: str | None = None
    pool: str | None = None
    min_up: int = 1
    weight: int = 0
    reverse: bool = False

    @property
    def label(self) -> str:
        return f"service {self.service}" if self.service else f"pool {self.pool}"


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """A ``vrrp_instance``."""

    name: str
    interface: str
    vrid: int
    priority: int = 100
    state: str = "BACKUP"
    advert_int_s: float = 1.0
    version: int = 2
    family: int = 4
    vips: tuple[VipSpec, ...] = ()
    track_scripts: tuple[TrackRef, ...] = ()
    track_interfaces: tuple[TrackRef, ...] = ()
    track_services: tuple[TrackService, ...] = ()
    preempt: bool = True
    preempt_delay_s: float = 0.0
    unicast_src_ip: IPAddress | None = None
    unicast_peers: tuple[IPAddress, ...] = ()
    #: Name of the VMAC (macvlan) interface; None: no VMAC.
    use_vmac: str | None = None
    vmac_xmit_base: bool = False
    garp: GarpPolicy = field(default_factory=GarpPolicy)
    lower_prio_no_advert: bool = False
    higher_prio_send_advert: bool = False
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify: str | None = None

    @property
    def vip_addresses(self) -> tuple[IPAddress, ...]:
        return tuple(v.ip for v in self.vips)


@dataclass(frozen=True, slots=True)
class SyncGroupSpec:
    """A ``vrrp_sync_group``: instances that change state together."""

    name: str
    members: tuple[str, ...]
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify: str | None = None


@dataclass(frozen=True, slots=True)
class VrrpSettings:
    """The whole ``[vrrp]`` section."""

    instances: Mapping[str, InstanceSpec] = field(default_factory=frozen_map)
    scripts: Mapping[str, ScriptSpec] = field(default_factory=frozen_map)
    sync_groups: Mapping[str, SyncGroupSpec] = field(default_factory=frozen_map)
    notify_timeout_s: float = 10.0
    router_id: str | None = None


# --------------------------------------------------------------------------- specs


def _IpAddr() -> Parsed:  # noqa: N802 (reads like the other specs)
    return Parsed(ipaddress.ip_address, "an IPv4 or IPv6 address")


def _Vip() -> Parsed:  # noqa: N802
    return Parsed(parse_vip, 'a virtual address such as "198.18.0.100/24" or "198.18.0.100/24 dev eth0"')


@dataclass
class _Map(Spec):
    """Parse with ``inner`` and map the result through ``fn``."""

    inner: Spec
    fn: Any

    def __post_init__(self) -> None:
        self.expected = self.inner.expected

    def parse(self, value, path, ctx):
        v = self.inner.parse(value, path, ctx)
        return v if v is INVALID else self.fn(v)


def _notify_field() -> Field:
    return Field(Str(what="a command line"), doc="command run on the transition (through /bin/sh -c)")


def _ref(kind: str, weight_range: tuple[int, int], default_weight: int | None) -> Spec:
    table = Table({
        "name": Field(Str(pattern=NAME if kind == "script" else IFNAME, what=f"a {kind} name"), required=True),
        "weight": Field(Int(*weight_range), default=default_weight),
        "reverse": Field(Bool(), default=False),
    }, build=lambda v, p, c: TrackRef(v["name"], v["weight"], v["reverse"]), what=f"a tracked {kind} table")
    plain = Str(pattern=NAME if kind == "script" else IFNAME, what=f"a {kind} name")
    return OneOf((
        (lambda v: isinstance(v, str), _Map(plain, lambda s: TrackRef(s, default_weight))),
        (lambda v: isinstance(v, dict), table),
    ), expected=f'a {kind} name, or a table {{ name = "...", weight = N, reverse = false }}')


def _build_track_service(v: dict, path: Path, ctx: Ctx):
    if (v["service"] is None) == (v["pool"] is None):
        ctx.error(path, "give exactly one of `service` or `pool`")
        return INVALID
    return TrackService(v["service"], v["pool"], v["min_up"], v["weight"], v["reverse"])


TRACK_SERVICE = Table({
    "service": Field(Str(pattern=NAME, what="a service name")),
    "pool": Field(Str(pattern=NAME, what="a pool name")),
    "min_up": Field(Int(1, 100000), default=1, doc="usable servers needed for OK"),
    "weight": Field(Int(-253, 253), default=0),
    "reverse": Field(Bool(), default=False),
}, build=_build_track_service, what="a tracked service table")

_GARP_KEYS = {
    "garp_master_delay": Field(Float(0, 1000), doc="seconds until the second set of GARPs after becoming master"),
    "garp_master_repeat": Field(Int(0, 1000), doc="GARPs per set on becoming master"),
    "garp_master_refresh": Field(Float(0, 86400), doc="seconds between periodic GARPs while master (0: none)"),
    "garp_master_refresh_repeat": Field(Int(1, 1000), doc="GARPs per periodic refresh"),
    "garp_lower_prio_delay": Field(Float(0, 1000), doc="seconds until the second set after a lower-priority advert"),
    "garp_lower_prio_repeat": Field(Int(0, 1000), doc="GARPs per set after a lower-priority advert"),
    "garp_interval": Field(Float(0, 1), doc="seconds between the GARPs of one set"),
    "gna_interval": Field(Float(0, 1), doc="seconds between the unsolicited NAs of one set"),
}


def _script_spec() -> Table:
    def build(v: dict, path: Path, ctx: Ctx):
        return ScriptSpec(str(path[-1]), v["script"], v["interval"], v["timeout"], v["weight"], v["reverse"],
                          v["rise"], v["fall"], v["init_fail"])

    return Table({
        "script": Field(Str(what="a command line"), required=True, doc="exit status 0: OK (run through /bin/sh -c)"),
        "interval": Field(Duration(min=0.01), default=1.0, doc="seconds between runs"),
        "timeout": Field(Duration(min=0.01), doc="a run longer than this fails (default: the interval)"),
        "weight": Field(Int(-253, 253), default=0, doc="0: failure means FAULT; otherwise added to the priority"),
        "reverse": Field(Bool(), default=False),
        "rise": Field(Int(1, 1000), default=1),
        "fall": Field(Int(1, 1000), default=1),
        "init_fail": Field(Bool(), default=False, doc="start in the failed state"),
    }, build=build, what="a vrrp script table")


def _instance_fields() -> dict[str, Field]:
    return {
        "interface": Field(Str(pattern=IFNAME, what="an interface name"), required=True),
        "virtual_router_id": Field(Int(1, 255), required=True),
        "priority": Field(Int(1, 255), default=100),
        "state": Field(Str(choices=("MASTER", "BACKUP")), default="BACKUP"),
        "advert_int": Field(Float(0.01, 255), default=1.0, doc="seconds (v2: whole seconds)"),
        "version": Field(Int(2, 3), doc="default: [vrrp] version (IPv6: 3)"),
        "virtual_ipaddress": Field(ListOf(_Vip(), min_len=1, single_ok=True), required=True),
        "track_script": Field(ListOf(_ref("script", (-253, 253), None)), default=()),
        "track_interface": Field(ListOf(_ref("interface", (-253, 253), 0)), default=()),
        "track_service": Field(ListOf(TRACK_SERVICE), default=(), doc="herder services/pools that must be healthy"),
        "nopreempt": Field(Bool(), default=False),
        "preempt_delay": Field(Float(0, 1000), default=0.0),
        "unicast_src_ip": Field(_IpAddr()),
        "unicast_peer": Field(ListOf(_IpAddr()), default=()),
        "use_vmac": Field(OneOf((
            (lambda v: isinstance(v, bool), Bool()),
            (lambda v: isinstance(v, str), Str(pattern=IFNAME, what="a VMAC interface name")),
        ), expected="true, or the VMAC interface's name"), default=False),
        "vmac_xmit_base": Field(Bool(), default=False),
        "lower_prio_no_advert": Field(Bool(), default=False),
        "higher_prio_send_advert": Field(Bool(), default=False),
        "notify_master": _notify_field(),
        "notify_backup": _notify_field(),
        "notify_fault": _notify_field(),
        "notify_stop": _notify_field(),
        "notify": _notify_field(),
        **_GARP_KEYS,
    }


def _instance_spec() -> Table:
    return Table(_instance_fields(), what="a vrrp instance table")


def _sync_group_spec() -> Table:
    return Table({
        "group": Field(ListOf(Str(pattern=NAME, what="an instance name"), min_len=1), required=True),
        "notify_master": _notify_field(),
        "notify_backup": _notify_field(),
        "notify_fault": _notify_field(),
        "notify_stop": _notify_field(),
        "notify": _notify_field(),
    }, what="a vrrp sync group table")


def _garp(v: dict, base: GarpPolicy) -> GarpPolicy:
    """A GarpPolicy from keepalived-named keys (None: inherit ``base``)."""
    def pick(key: str, default):
        return default if v.get(key) is None else v[key]

    master_delay = pick("garp_master_delay", base.master_delay_s)
    master_repeat = pick("garp_master_repeat", base.master_repeat)
    return GarpPolicy(
        master_delay_s=master_delay,
        master_repeat=master_repeat,
        master_refresh_s=pick("garp_master_refresh", base.master_refresh_s),
        master_refresh_repeat=pick("garp_master_refresh_repeat", base.master_refresh_repeat),
        # keepalived: the lower-priority settings default to the master ones
        lower_prio_delay_s=pick("garp_lower_prio_delay", master_delay if v.get("garp_master_delay") is not None
                                else base.lower_prio_delay_s),
        lower_prio_repeat=pick("garp_lower_prio_repeat", master_repeat if v.get("garp_master_repeat") is not None
                               else base.lower_prio_repeat),
        interval_s=pick("garp_interval", pick("gna_interval", base.interval_s)),
    )


def _build_section(v: dict, path: Path, ctx: Ctx):
    """Turn the checked raw tables into :class:`VrrpSettings`; cross-reference checks."""
    ok = True
    default_version = v["version"]
    globals_garp = _garp(v, GarpPolicy())
    scripts: dict[str, ScriptSpec] = dict(v["scripts"] or {})
    raw_instances: dict[str, dict] = v["instances"] or {}
    instances: dict[str, InstanceSpec] = {}
    seen_vrid: dict[tuple[str, int, int], str] = {}
    for name, iv in raw_instances.items():
        ip = (*path, "instances", name)
        vips = tuple(iv["virtual_ipaddress"])
        families = {x.ip.version for x in vips}
        if len(families) > 1:
            ctx.error((*ip, "virtual_ipaddress"), "all virtual addresses of an instance must be one family "
                      "(keepalived: use another instance for the other family)")
            ok = False
            continue
        family = families.pop()
        version = iv["version"] if iv["version"] is not None else (3 if family == 6 else default_version)
        if family == 6 and version == 2:
            ctx.error((*ip, "version"), "VRRPv2 (RFC 3768) is IPv4 only; IPv6 instances use version 3")
            ok = False
        adv = iv["advert_int"]
        if version == 2 and adv != int(adv):
            ctx.error((*ip, "advert_int"), f"VRRPv2 advertises whole seconds; {adv:g} is not (use version 3 "
                      "for sub-second intervals)")
            ok = False
        if version == 3 and adv > 40.95:
            ctx.error((*ip, "advert_int"), f"VRRPv3 intervals are at most 40.95 s, not {adv:g}")
            ok = False
        for i, ref in enumerate(iv["track_script"]):
            if ref.name not in scripts:
                ctx.error((*ip, "track_script", i), f"no vrrp script named {ref.name!r}"
                          + (f" (scripts: {', '.join(sorted(scripts))})" if scripts else ""))
                ok = False
        peers = tuple(iv["unicast_peer"])
        for i, p in enumerate(peers):
            if p.version != family:
                ctx.error((*ip, "unicast_peer", i), f"unicast peer {p} is not IPv{family} like the instance")
                ok = False
        src = iv["unicast_src_ip"]
        if src is not None and src.version != family:
            ctx.error((*ip, "unicast_src_ip"), f"{src} is not IPv{family} like the instance")
            ok = False
        vmac = iv["use_vmac"]
        vmac_name = None
        if vmac:
            vmac_name = vmac if isinstance(vmac, str) else f"vrrp.{iv['virtual_router_id']}"
            if family == 6:
                ctx.error((*ip, "use_vmac"), "use_vmac is supported for IPv4 instances only (not yet for IPv6)")
                ok = False
        key = (iv["interface"], family, iv["virtual_router_id"])
        if key in seen_vrid and not peers:
            ctx.error((*ip, "virtual_router_id"), f"VRID {key[2]} is already used on {key[0]} (IPv{family}) by "
                      f"instance {seen_vrid[key]!r}")
            ok = False
        seen_vrid.setdefault(key, name)
        instances[name] = InstanceSpec(
            name=name, interface=iv["interface"], vrid=iv["virtual_router_id"], priority=iv["priority"],
            state=iv["state"], advert_int_s=adv, version=version, family=family, vips=vips,
            track_scripts=tuple(iv["track_script"]), track_interfaces=tuple(iv["track_interface"]),
            track_services=tuple(iv["track_service"]), preempt=not iv["nopreempt"],
            preempt_delay_s=iv["preempt_delay"], unicast_src_ip=src, unicast_peers=peers, use_vmac=vmac_name,
            vmac_xmit_base=iv["vmac_xmit_base"], garp=_garp(iv, globals_garp),
            lower_prio_no_advert=iv["lower_prio_no_advert"], higher_prio_send_advert=iv["higher_prio_send_advert"],
            notify_master=iv["notify_master"], notify_backup=iv["notify_backup"], notify_fault=iv["notify_fault"],
            notify_stop=iv["notify_stop"], notify=iv["notify"],
        )
    groups: dict[str, SyncGroupSpec] = {}
    member_of: dict[str, str] = {}
    for name, gv in (v["sync_groups"] or {}).items():
        gp = (*path, "sync_groups", name)
        for i, m in enumerate(gv["group"]):
            if m not in raw_instances:
                ctx.error((*gp, "group", i), f"no vrrp instance named {m!r}")
                ok = False
            elif m in member_of:
                ctx.error((*gp, "group", i), f"instance {m!r} is already in sync group {member_of[m]!r}")
                ok = False
            else:
                member_of[m] = name
        groups[name] = SyncGroupSpec(name, tuple(gv["group"]), gv["notify_master"], gv["notify_backup"],
                                     gv["notify_fault"], gv["notify_stop"], gv["notify"])
    if not ok:
        return INVALID
    return VrrpSettings(instances=frozen_map(instances), scripts=frozen_map(scripts),
                        sync_groups=frozen_map(groups), notify_timeout_s=v["notify_timeout"],
                        router_id=v["router_id"])


VRRP_SECTION = Table({
    "version": Field(Int(2, 3), default=2, doc="default VRRP version (keepalived vrrp_version)"),
    "router_id": Field(Str(what="a name"), doc="this router's name, for logs (keepalived router_id)"),
    "notify_timeout": Field(Duration(min=0.01), default=10.0, doc="notify scripts running longer are killed"),
    "scripts": Field(MapOf(_script_spec(), NAME), default=None),
    "instances": Field(MapOf(_instance_spec(), NAME), default=None),
    "sync_groups": Field(MapOf(_sync_group_spec(), NAME), default=None),
    **_GARP_KEYS,
}, build=_build_section, what="the [vrrp] table")
