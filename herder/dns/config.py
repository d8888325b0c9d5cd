"""The ``[dns]`` configuration section: its schema, and the answer view built from it.

Registered with herder's schema library (:mod:`herder.config.native`), so every error
names ``file:line: key`` and unknown keys are errors. Zone files and inline records are
loaded while the file is checked: ``herder check`` reports zone syntax errors with the
zone file's line too. Reference checks that need the merged configuration (a name's pool,
a map's regions) run once every file is merged (:func:`check_references`, registered with
the loader), with the same ``file:line: key`` form, for ``herder check`` and ``herder run``.

The full key reference is docs/dns.md; in short::

    [dns]
    listen = ["127.0.0.1:5353"]          # UDP and TCP on each
    [dns.zones."example.com"]             # a zone: `file` (master file) or `records`
    records = ["www CNAME www.example.com.edge.test."]
    [dns.names."app.example.com"]         # A/AAAA from a pool, through a policy
    pool = "web"
    policy = "weighted"
    [dns.maps."dscj.edge.test"]           # the Akamai two-level hierarchy
    mode = "delegate"
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath

from herder.config.schema import (
    INVALID,
    Addr,
    Bool,
    Ctx,
    Duration,
    Field,
    Float,
    Int,
    ListOf,
    MapOf,
    Parsed,
    Path,
    Spec,
    Str,
    Table,
)
from herder.dns.answer import View
from herder.dns.geo import LatencyTable, Network, RegionMap
from herder.dns.mapping import DEFAULT_MAP_TTL, MODES, ROLES, MapDomain, RegionServers
from herder.dns.policy import FALLBACKS, POLICIES, NamePolicy
from herder.dns.wire import is_subdomain, name_from_text, name_to_text
from herder.dns.zone import Zone, ZoneError, ZoneSet, load_zone_file, zone_from_records
from herder.pool.model import Endpoint, Region, frozen_map

__all__ = ["DNS_SECTION", "DnsSettings", "ZoneSpec", "check_references", "make_view", "settings_for_zones"]

log = logging.getLogger(__name__)

#: A domain name as a TOML key (quote it: ``[dns.zones."example.com"]``).
DNS_NAME = r"[A-Za-z0-9_*]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?"
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
MAX_TTL = 2**31 - 1


@dataclass(frozen=True)
class ZoneSpec:
    """One zone as configured; ``zone`` is the loaded data (not compared: two specs are
    equal when their source is, so an unchanged config does not look changed)."""

    origin: str
    source: str
    digest: str
    zone: Zone = field(compare=False, repr=False)


@dataclass(frozen=True)
class DnsSettings:
    """The parsed ``[dns]`` section."""

    listen: tuple[Endpoint, ...]
    udp_payload: int = 1232
    ecs: bool = True
    default_region: str | None = None
    ttl: int = 20
    cache_entries: int = 100_000
    tcp_idle_timeout: float = 10.0
    #: "loop": UDP on the event loop; "thread": a blocking socket in a thread of its own.
    udp_io: str = "loop"
    zones: tuple[ZoneSpec, ...] = ()
    names: tuple[NamePolicy, ...] = ()
    maps: tuple[MapDomain, ...] = ()
    latency: tuple[tuple[Network, tuple[tuple[str, float], ...]], ...] = ()
    #: Where each named thing was configured ("file:line"), for start-time errors.
    where: Mapping[str, str] = field(default_factory=frozen_map, compare=False)


# --------------------------------------------------------------------------- specs


def DnsName() -> Parsed:  # noqa: N802 (reads like the other specs)
    """A domain name as text; parsed to wire form."""
    return Parsed(name_from_text, 'a domain name such as "ns1.example.com"')


def IpText() -> Parsed:  # noqa: N802
    """An IP address as text (normalised)."""
    return Parsed(lambda v: str(ipaddress.ip_address(v)), 'an IP address such as "198.18.1.53"')


class _LatencySpec(Spec):
    """``[dns.latency]``: client prefix -> {region: milliseconds}."""

    expected = 'a table of client prefixes, each a table {region = milliseconds}'

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.bad(value, path, ctx)
        rows = []
        ok = True
        ms = Float(min=0.0)
        for prefix, row in value.items():
            p = (*path, prefix)
            try:
                net = ipaddress.ip_network(prefix, strict=False)
            except ValueError as e:
                ctx.error(p, f"expected a client prefix such as \"198.18.0.0/24\" ({e})")
                ok = False
                continue
            if not isinstance(row, dict) or not row:
                ctx.error(p, "expected a non-empty table {region = milliseconds}")
                ok = False
                continue
            entries = []
            for region, v in row.items():
                f = ms.parse(v, (*p, region), ctx)
                if f is INVALID:
                    ok = False
                else:
                    entries.append((region, f))
            rows.append((net, tuple(entries)))
        return tuple(rows) if ok else INVALID


def _zone_spec() -> Table:
    return Table({
        "file": Field(Str(what="a zone file path"), doc="RFC 1035 master file, relative to this config file"),
        "records": Field(ListOf(Str(what="a zone file line")), doc="master-file lines relative to the zone"),
        "ttl": Field(Int(0, MAX_TTL), default=3600, doc="default TTL of `records` ($TTL)"),
        "soa": Field(Str(what="SOA data: MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM")),
        "geo": Field(Bool(), default=False, doc="answer A/AAAA by the region of their addresses"),
    }, build=_build_zone, what="a zone table")


def _build_zone(v: dict, path: Path, ctx: Ctx):
    origin = str(path[-1])
    try:
        name_from_text(origin)
    except (ValueError, UnicodeError) as e:
        ctx.error(path, f"bad zone name {origin!r}: {e}")
        return INVALID
    if v["file"] and v["records"] is not None:
        ctx.error((*path, "records"), "give either `file` or `records`, not both")
        return INVALID
    if v["file"]:
        if v["soa"] is not None:
            ctx.error((*path, "soa"), "`soa` is for inline records; a zone file has its own SOA")
            return INVALID
        fpath = FsPath(v["file"])
        if not fpath.is_absolute():
            fpath = FsPath(ctx.file).parent / fpath
        try:
            zone = load_zone_file(str(fpath), origin.rstrip(".") + ".", geo=v["geo"])
        except ZoneError as e:
            ctx.error((*path, "file"), str(e))
            return INVALID
        digest = hashlib.sha256(fpath.read_bytes()).hexdigest()
        return ZoneSpec(origin, str(fpath), digest, zone)
    records = v["records"] or ()
    zone, errors = zone_from_records(origin, records, ttl=v["ttl"], soa=v["soa"], filename=ctx.where(path),
                                     geo=v["geo"])
    for idx, msg in errors:
        if idx is None:
            ctx.error((*path, "soa") if v["soa"] else path, msg)
        else:
            ctx.error((*path, "records", idx), msg)
    if zone is None:
        return INVALID
    text = "\n".join([str(v["ttl"]), v["soa"] or "", *records])
    return ZoneSpec(origin, ctx.where(path), hashlib.sha256(text.encode()).hexdigest(), zone)


def _name_spec() -> Table:
    return Table({
        "pool": Field(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a pool name"), required=True),
        "policy": Field(Str(choices=POLICIES), default="simple"),
        "ttl": Field(Int(0, MAX_TTL)),
        "max_answers": Field(Int(1, 64), default=8),
        "secondary": Field(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a pool name")),
        "fallback": Field(Str(choices=FALLBACKS), default="all"),
        "sorry": Field(ListOf(Str(what="an IP address or a host name"), single_ok=True), default=()),
    }, build=_build_name, what="a policy name table")


def _build_name(v: dict, path: Path, ctx: Ctx):
    try:
        wire = name_from_text(str(path[-1]))
    except (ValueError, UnicodeError) as e:
        ctx.error(path, f"bad name {path[-1]!r}: {e}")
        return INVALID
    if v["secondary"] is not None and v["policy"] != "failover":
        ctx.error((*path, "secondary"), "`secondary` is only used by policy = \"failover\"")
        return INVALID
    sorry = tuple(v["sorry"])
    if v["fallback"] == "sorry" and not sorry:
        ctx.error((*path, "sorry"), 'fallback = "sorry" needs `sorry` (IP addresses, or one host name)')
        return INVALID
    names = []
    for i, s in enumerate(sorry):
        try:
            ipaddress.ip_address(s)
        except ValueError:
            try:
                name_from_text(s)
            except (ValueError, UnicodeError) as e:
                ctx.error((*path, "sorry", i), f"expected an IP address or a host name ({e})")
                return INVALID
            names.append(s)
    if names and len(sorry) > 1:
        ctx.error((*path, "sorry"), "a sorry host name (answered as a CNAME) must be the only entry")
        return INVALID
    return NamePolicy(name=wire, pool=v["pool"], policy=v["policy"], ttl=v["ttl"] if v["ttl"] is not None else -1,
                      max_answers=v["max_answers"], secondary=v["secondary"], fallback=v["fallback"], sorry=sorry)


def _map_region_spec() -> Table:
    return Table({
        "name_servers": Field(MapOf(ListOf(IpText(), single_ok=True), name_pattern=DNS_NAME), default={},
                              doc="name server host name -> its addresses (glue)"),
    }, what="a region table of a map")


def _map_spec() -> Table:
    return Table({
        "mode": Field(Str(choices=MODES), default="delegate"),
        "ttl": Field(Int(0, MAX_TTL), default=DEFAULT_MAP_TTL),
        "role": Field(Str(choices=ROLES), default="global"),
        "region": Field(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a region name")),
        "local": Field(ListOf(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a region name"))),
        "pool": Field(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a pool name")),
        "regions": Field(MapOf(_map_region_spec()), default={}),
    }, build=_build_map, what="a map table")


def _build_map(v: dict, path: Path, ctx: Ctx):
    try:
        wire = name_from_text(str(path[-1]))
    except (ValueError, UnicodeError) as e:
        ctx.error(path, f"bad domain {path[-1]!r}: {e}")
        return INVALID
    if v["role"] == "region" and not v["region"]:
        ctx.error(path, 'role = "region" needs `region` (the region this server answers for)')
        return INVALID
    if v["role"] == "global" and v["region"]:
        ctx.error((*path, "region"), '`region` is for role = "region"; a global level uses `local`')
        return INVALID
    regions = {}
    for rname, rv in v["regions"].items():
        if v["mode"] == "cname" and not re.fullmatch(LABEL, rname):
            ctx.error((*path, "regions", rname), "in cname mode a region name is a DNS label: letters, digits, '-'")
            return INVALID
        servers = []
        for ns, addrs in rv["name_servers"].items():
            servers.append((name_from_text(ns), tuple(addrs)))
        regions[rname] = RegionServers(rname, tuple(servers))
    local = frozenset(v["local"]) if v["local"] is not None else None
    if local is not None:
        for rname, rs in regions.items():
            if rname not in local and not rs.name_servers:
                ctx.error((*path, "regions", rname), f"region {rname!r} is not local and has no name_servers "
                          "to refer clients to")
                return INVALID
    return MapDomain(domain=wire, mode=v["mode"], ttl=v["ttl"], role=v["role"], region=v["region"], local=local,
                     regions=frozen_map(regions), pool=v["pool"])


def _build_dns(v: dict, path: Path, ctx: Ctx):
    zones = tuple(v["zones"].values())
    zset_keys = {name_from_text(z.origin).lower(): z for z in zones}
    ok = True

    def zone_of(key: bytes) -> bytes | None:
        best = None
        for zk in zset_keys:
            if is_subdomain(key, zk) and (best is None or len(zk) > len(best)):
                best = zk
        return best

    names = []
    where: dict[str, str] = {}
    ttl = v["ttl"]
    for text, pol in v["names"].items():
        p = (*path, "names", text)
        if zone_of(pol.name.lower()) is None:
            ctx.error(p, f"name {text!r} is in none of the zones in [dns.zones]")
            ok = False
            continue
        if pol.ttl < 0:
            pol = NamePolicy(pol.name, pol.pool, pol.policy, ttl, pol.max_answers, pol.secondary, pol.fallback,
                             pol.sorry)
        names.append(pol)
        key = text.rstrip(".")  # check_references looks names up without the final dot
        where[f"name:{key}"] = ctx.where((*p, "pool"))
        where[f"name:{key}:secondary"] = ctx.where((*p, "secondary"))
    maps = []
    for text, m in v["maps"].items():
        p = (*path, "maps", text)
        if m.mode == "delegate" and m.key not in zset_keys:
            ctx.error(p, f"a delegate map's domain must be a zone of its own: add [dns.zones.\"{text}\"]")
            ok = False
            continue
        if m.mode == "cname" and zone_of(m.key) is None:
            ctx.error(p, f"domain {text!r} is in none of the zones in [dns.zones]")
            ok = False
            continue
        maps.append(m)
        where[f"map:{text.rstrip('.')}"] = ctx.where(p)
        if m.pool:
            where[f"map:{text.rstrip('.')}:pool"] = ctx.where((*p, "pool"))
    latency = v["latency"] or ()
    if v["default_region"] is not None:
        where["default_region"] = ctx.where((*path, "default_region"))
    if not ok:
        return INVALID
    return DnsSettings(
        listen=tuple(v["listen"]), udp_payload=v["udp_payload"], ecs=v["ecs"], default_region=v["default_region"],
        ttl=ttl, cache_entries=v["cache_entries"], tcp_idle_timeout=v["tcp_idle_timeout"], udp_io=v["udp_io"],
        zones=zones,
        names=tuple(names), maps=tuple(maps), latency=latency, where=frozen_map(where),
    )


DNS_SECTION = Table({
    "listen": Field(ListOf(Addr(default_port=53), min_len=1, single_ok=True), required=True,
                    doc="addresses to serve on, UDP and TCP (port 53 if omitted)"),
    "udp_payload": Field(Int(512, 4096), default=1232, doc="largest UDP answer with EDNS (we advertise it)"),
    "ecs": Field(Bool(), default=True, doc="use and echo EDNS Client Subnet (RFC 7871)"),
    "default_region": Field(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a region name"),
                            doc="region of clients that match no [regions.*] prefix"),
    "ttl": Field(Int(0, MAX_TTL), default=20, doc="default TTL of policy answers (the regional level)"),
    "cache_entries": Field(Int(0, 10_000_000), default=100_000, doc="encoded answers kept (0 disables)"),
    "tcp_idle_timeout": Field(Duration(), default=10.0),
    "udp_io": Field(Str(choices=("loop", "thread")), default="loop",
                    doc="UDP on the event loop, or on a blocking socket in its own thread (faster)"),
    "zones": Field(MapOf(_zone_spec(), name_pattern=DNS_NAME), default={}),
    "names": Field(MapOf(_name_spec(), name_pattern=DNS_NAME), default={}),
    "maps": Field(MapOf(_map_spec(), name_pattern=DNS_NAME), default={}),
    "latency": Field(_LatencySpec()),
}, build=_build_dns, what="the [dns] table")


# --------------------------------------------------------------------------- checks and views


def check_references(s: DnsSettings, pools: Mapping[str, object], regions: Mapping[str, Region]) -> list[str]:
    """Errors (``file:line: key: message``) for references to pools and regions that the
    merged configuration does not define. Empty when all is well."""
    errors = []
    known_regions = set(regions) | ({s.default_region} if s.default_region else set())
    if s.default_region and s.default_region not in regions:
        errors.append(f"{s.where.get('default_region', '?')}: dns.default_region: region {s.default_region!r} "
                      "is not defined in [regions]")
    for pol in s.names:
        text = name_to_text(pol.name).rstrip(".")
        if pol.pool not in pools:
            errors.append(f"{s.where.get(f'name:{text}', '?')}: dns.names.{text}.pool: pool {pol.pool!r} is not defined")
        if pol.secondary and pol.secondary not in pools:
            errors.append(f"{s.where.get(f'name:{text}:secondary', '?')}: dns.names.{text}.secondary: "
                          f"pool {pol.secondary!r} is not defined")
    for m in s.maps:
        text = name_to_text(m.domain).rstrip(".")
        w = s.where.get(f"map:{text}", "?")
        if m.pool and m.pool not in pools:
            errors.append(f"{s.where.get(f'map:{text}:pool', w)}: dns.maps.{text}.pool: pool {m.pool!r} is not defined")
        mine = set(m.regions) | known_regions
        if m.role == "region" and m.region not in mine:
            errors.append(f"{w}: dns.maps.{text}.region: region {m.region!r} is not defined")
        for r in sorted(m.local or ()):
            if r not in mine:
                errors.append(f"{w}: dns.maps.{text}.local: region {r!r} is not defined")
        if m.mode == "cname":
            for r in sorted(known_regions):
                if not re.fullmatch(LABEL, r):
                    errors.append(f"{w}: dns.maps.{text}: region {r!r} is not a DNS label; cname mode uses "
                                  "region names as labels")
    return errors


def make_view(s: DnsSettings, regions: Mapping[str, Region]) -> View:
    """The static part of the answer view (zones, names, maps, region map, latency); the
    pool views are added per snapshot with ``View.with_snapshot``."""
    zset = ZoneSet(z.zone for z in s.zones)
    return View.build(
        zset,
        names={p.name.lower(): p for p in s.names},
        maps={m.key: m for m in s.maps},
        region_map=RegionMap.from_regions(regions, s.default_region),
        latency=LatencyTable.build((net, dict(row)) for net, row in s.latency),
        ecs=s.ecs,
    )


def settings_for_zones(zones: list[Zone], listen: tuple[Endpoint, ...], **kw) -> DnsSettings:
    """Settings that serve ``zones`` as they are (``herder dns serve``)."""
    specs = tuple(ZoneSpec(name_to_text(z.origin), z.source, "", z) for z in zones)
    return DnsSettings(listen=listen, zones=specs, **kw)
