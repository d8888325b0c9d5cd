"""The answer function: (query, client, view) -> response. Pure.

Theory of operation
-------------------
:func:`answer` is the whole of herder's DNS logic; the server only decodes a query,
calls it and encodes the result (STYLE.md synthesis B, after dnspython's
``nanonameserver.handle``). Its inputs are data:

* the :class:`~herder.dns.wire.Query` (name, type, EDNS, ECS);
* the client as a :class:`~herder.dns.geo.ClientPrefix` (the ECS prefix when the query
  has one and ECS is on, else the packet's source address), classified once by
  :func:`classify` into a :class:`ClientClass` (region and latency row, with scopes);
* a :class:`View`: the zones, the policy names, the mapped domains, the region map, the
  latency table and the pool views of one pool-state snapshot.

The lookup follows RFC 1034 4.3.2 per zone, in this order: the mapping level of a mapped
domain (a referral or CNAME that depends on the client, or the choice of a regional
level), delegations (a referral with glue, AA clear), policy names (A/AAAA from the
pool's usable servers), static data (with CNAME chasing across every zone we serve,
RFC 6604 rcode of the last name), wildcards (RFC 4592), then NODATA (the name exists,
empty non-terminals included) or NXDOMAIN, both with the zone's SOA at the negative TTL
(RFC 2308). Names outside every zone get REFUSED (no recursion); opcodes other than
QUERY get NOTIMP; a newer EDNS version gets BADVERS (RFC 6891 6.1.3).

Randomness is not done here. :func:`answer_set` returns every possible response of a
query as weighted variants (a weighted policy gives one variant per server; multivalue
one per rotation); :meth:`AnswerSet.pick` takes a random number generator. The server
encodes the variants once and caches them per (query, client class, view version); the
tests call :func:`answer` with a seeded generator.

Names are handled in wire form (:mod:`herder.dns.wire`); owner names of the answer keep
the query's spelling (RFC 4343: case-insensitive, case-preserving).

No asyncio, socket or pyroute2 here (tests/unit/test_layering.py checks it), and no clock:
authoritative answers do not age.
"""

from __future__ import annotations

import bisect
import ipaddress
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from herder.dns.geo import ClientPrefix, LatencyTable, RegionMap
from herder.dns.mapping import MapDomain, choose_region
from herder.dns.policy import NamePolicy, Selection, region_up, select
from herder.dns.wire import (
    CLASS_ANY,
    CLASS_IN,
    CompName,
    Opcode,
    Query,
    Rcode,
    Response,
    RRset,
    RType,
    name_from_text,
    split_labels,
    suffixes,
)
from herder.dns.zone import Zone, ZoneSet, rdata_target
from herder.pool.model import frozen_map
from herder.pool.state import PoolView, Snapshot

__all__ = ["AnswerSet", "ClientClass", "View", "answer", "answer_set", "classify", "client_prefix", "source_prefix"]

#: Longest CNAME chain followed inside our zones (BIND follows 16; Akamai's has 2).
MAX_CHAIN = 8
#: Upper bound on the variants of one answer (a product of several policy steps).
MAX_VARIANTS = 256
_META_TYPES = range(128, 255)  # RFC 6895 3.1: meta and question-only types (ANY=255 allowed)


# --------------------------------------------------------------------------- view


@dataclass(frozen=True, eq=False)
class View:
    """Everything the answer depends on besides the query and the client. Immutable;
    :meth:`with_snapshot` gives the view of a newer pool-state snapshot.

    ``version`` changes whenever an answer could change (it is the snapshot version);
    the server's caches are keyed by it. ``ecs`` says whether Client Subnet options are
    used and echoed (when off they are ignored, RFC 7871 7.1.3).
    """

    zones: ZoneSet = field(default_factory=ZoneSet)
    names: Mapping[bytes, NamePolicy] = field(default_factory=frozen_map)
    maps: Mapping[bytes, MapDomain] = field(default_factory=frozen_map)
    region_map: RegionMap = field(default_factory=RegionMap)
    latency: LatencyTable = field(default_factory=LatencyTable)
    pools: Mapping[str, PoolView] = field(default_factory=frozen_map)
    version: int = 0
    ecs: bool = True
    #: Ancestors of policy names: they exist even without static data (NODATA, not NXDOMAIN).
    implied: frozenset[bytes] = frozenset()

    @classmethod
    def build(cls, zones: ZoneSet, names: Mapping[bytes, NamePolicy] | None = None,
              maps: Mapping[bytes, MapDomain] | None = None, **kw) -> View:
        """A view; ``names`` and ``maps`` are keyed by lookup key (lower-case wire name)."""
        names = frozen_map(names or {})
        implied = set()
        for key in names:
            implied.update(suffixes(key))
        return cls(zones=zones, names=names, maps=frozen_map(maps or {}), implied=frozenset(implied), **kw)

    def with_snapshot(self, snap: Snapshot, region_map: RegionMap | None = None) -> View:
        """This view with the pool views (and version) of ``snap``."""
        return replace(self, pools=snap.pools, version=snap.version,
                       region_map=region_map if region_map is not None else self.region_map)


@dataclass(frozen=True, slots=True)
class ClientClass:
    """What the answer may depend on about the client, with the ECS scope of each part."""

    region: str | None = None
    region_scope: int = 0
    latency_row: int | None = None
    latency_scope: int = 0

    @property
    def key(self) -> tuple[str | None, int | None]:
        """Clients with equal keys get equal answers (the cache key's client part)."""
        return (self.region, self.latency_row)


def client_prefix(query: Query, source: str | None, view: View) -> tuple[ClientPrefix | None, bool]:
    """The client the answer is for: ``(prefix, from_ecs)``.

    The ECS option's prefix when the query carries one with a non-zero source length and
    ECS is on; else the packet's ``source`` address (None when unknown or unparsable).
    """
    edns = query.edns
    if view.ecs and edns is not None and edns.ecs is not None and edns.ecs.source_len > 0:
        e = edns.ecs
        return ClientPrefix(4 if e.family == 1 else 6, e.network, e.source_len), True
    return source_prefix(source), False


def source_prefix(source: str | None) -> ClientPrefix | None:
    """A packet's source address as a full-length client prefix (None if unparsable).
    IPv4-mapped IPv6 addresses count as IPv4."""
    if source is None:
        return None
    try:
        ip = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ClientPrefix(ip.version, int(ip), ip.max_prefixlen)


def classify(view: View, client: ClientPrefix | None) -> ClientClass:
    """The client's region (longest-prefix match, default region otherwise) and latency
    row, each with the prefix length it holds for."""
    if client is None:
        return ClientClass(view.region_map.default, 0)
    region, rscope = view.region_map.lookup(client)
    row, lscope = view.latency.lookup(client) if view.latency else (None, 0)
    return ClientClass(region, rscope, row, lscope)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class AnswerSet:
    """Every response a query can get, with weights; pick one per query.

    ``client_dependent`` is True when the responses depend on the client class (the
    server must then key its cache by it, and the ECS scope is non-zero).
    """

    variants: tuple[Response, ...]
    weights: tuple[float, ...]
    client_dependent: bool = False

    def pick(self, rng: random.Random | None = None) -> Response:
        """One variant, chosen with probability proportional to its weight (the first
        variant when ``rng`` is None)."""
        if len(self.variants) == 1 or rng is None:
            return self.variants[0]
        cum = []
        total = 0.0
        for w in self.weights:
            total += w
            cum.append(total)
        return self.variants[bisect.bisect_right(cum, rng.random() * total)]


Segment = tuple[tuple[float, tuple[RRset, ...]], ...]

_ANSWER, _CNAME, _REFERRAL, _NODATA, _NXDOMAIN = range(5)


@dataclass(slots=True)
class _Result:
    kind: int
    segment: Segment = ()
    target: bytes = b""
    authority: tuple[RRset, ...] = ()
    additional: tuple[RRset, ...] = ()


def _single(resp: Response) -> AnswerSet:
    return AnswerSet((resp,), (1.0,), False)


# --------------------------------------------------------------------------- entry points


def answer(query: Query, client: ClientPrefix | None, view: View, *, rng: random.Random | None = None) -> Response:
    """The response to ``query`` from ``client``, given ``view``.

    ``client`` is what :func:`client_prefix` returns (None: unknown client, default
    region). ``rng`` picks among weighted or rotated variants; None picks the first.
    Never raises for any parsed query.
    """
    return answer_set(query, classify(view, client), view).pick(rng)


def answer_set(query: Query, cls: ClientClass, view: View) -> AnswerSet:
    """Every possible response to ``query`` for clients of class ``cls``; see the module
    docstring for the lookup order."""
    if query.opcode != Opcode.QUERY:
        return _single(Response(Rcode.NOTIMP, aa=False))
    edns = query.edns
    if edns is not None and edns.version > 0:
        return _single(Response(Rcode.BADVERS, aa=False))
    if query.qtype == RType.OPT or query.qtype in _META_TYPES and query.qtype not in (RType.AXFR, RType.IXFR):
        return _single(Response(Rcode.FORMERR, aa=False))
    if query.qclass not in (CLASS_IN, CLASS_ANY) or query.qtype in (RType.AXFR, RType.IXFR):
        return _single(Response(Rcode.REFUSED, aa=False))
    r = _Resolver(view, cls)
    rcode, aa, segments, authority, additional = r.resolve(query.qname, query.qtype)
    dependent = r.used_region or r.used_latency
    ecs_scope = None
    if view.ecs and edns is not None and edns.ecs is not None:
        scope = 0
        if r.used_region:
            scope = cls.region_scope
        if r.used_latency:
            scope = max(scope, cls.latency_scope)
        ecs_scope = scope
    combos: list[tuple[float, tuple[RRset, ...]]] = [(1.0, ())]
    for seg in segments:
        combos = [(w1 * w2, a + b) for w1, a in combos for w2, b in seg][:MAX_VARIANTS]
    variants = tuple(Response(rcode, aa, rrs, authority, additional, ecs_scope) for _, rrs in combos)
    return AnswerSet(variants, tuple(w for w, _ in combos), dependent)


# --------------------------------------------------------------------------- resolution


def _addr_rrset(owner: bytes, family: int, packed: list[bytes], ttl: int) -> RRset:
    return RRset(owner, RType.A if family == 4 else RType.AAAA, ttl, tuple((p,) for p in packed))


def _relative_labels(key: bytes, parent: bytes) -> list[bytes]:
    """The labels of ``key`` above ``parent`` (``key`` must be below or equal to it)."""
    return split_labels(key[: len(key) - len(parent)] + b"\x00")


class _Resolver:
    """One query's lookup; records whether it consulted the client's region or latency."""

    def __init__(self, view: View, cls: ClientClass) -> None:
        self.view = view
        self.cls = cls
        self.used_region = False
        self.used_latency = False

    # ------------------------------------------------------------------ driver

    def resolve(self, qname: bytes, qtype: int) -> tuple[int, bool, list[Segment], tuple[RRset, ...], tuple[RRset, ...]]:
        """Follow ``qname`` through our zones: (rcode, aa, answer segments, authority, additional)."""
        view = self.view
        segments: list[Segment] = []
        authority: tuple[RRset, ...] = ()
        additional: tuple[RRset, ...] = ()
        rcode = Rcode.NOERROR
        aa = True
        name = qname
        seen: set[bytes] = set()
        for hop in range(MAX_CHAIN + 1):
            key = name.lower()
            zone = view.zones.find(key)
            if zone is None:
                if hop == 0:
                    return Rcode.REFUSED, False, [], (), ()
                break  # a CNAME out of our zones: the resolver carries on from here
            if key in seen or hop == MAX_CHAIN:
                break  # a CNAME loop or an overlong chain: answer what we have
            seen.add(key)
            res = self._lookup(zone, name, key, qtype)
            if res.kind == _CNAME:
                segments.append(res.segment)
                name = res.target
                continue
            if res.kind == _ANSWER:
                segments.append(res.segment)
                additional = res.additional
            elif res.kind == _REFERRAL:
                if hop == 0:
                    aa = False
                authority, additional = res.authority, res.additional
            elif res.kind == _NODATA:
                authority = (zone.negative_soa(),)
            else:
                rcode = Rcode.NXDOMAIN
                authority = (zone.negative_soa(),)
            break
        return rcode, aa, segments, authority, additional

    # ------------------------------------------------------------------ one zone

    def _lookup(self, zone: Zone, name: bytes, key: bytes, qtype: int) -> _Result:
        view = self.view
        level_region: str | None = None
        policy_key = key
        if view.maps:
            m = self._find_map(zone, key)
            if m is not None:
                out = self._map(m, zone, name, key, qtype)
                if isinstance(out, _Result):
                    return out
                level_region, policy_key = out
        if zone.cuts:
            cut = self._find_cut(zone, key, qtype)
            if cut is not None:
                return self._referral(zone, cut)
        pol = view.names.get(policy_key)
        static = zone.nodes.get(key)
        if pol is not None and qtype in (RType.A, RType.AAAA, RType.ANY) and not (static and RType.CNAME in static):
            return self._policy(pol, zone, name, qtype, level_region, static)
        node = static
        owner = name
        if node is None and zone.wildcards and key not in zone.names and key not in view.implied:
            node = self._wildcard(zone, key)
        if node is not None:
            cname = node.get(RType.CNAME)
            if cname is not None and qtype not in (RType.CNAME, RType.ANY):
                rr = cname.with_owner(owner)
                return _Result(_CNAME, ((1.0, (rr,)),), target=rdata_target(RType.CNAME, rr.rdatas[0]) or b"")
            if qtype == RType.ANY:
                rrsets = tuple(rr.with_owner(owner) for rr in node.values())
                return _Result(_ANSWER, ((1.0, rrsets),), additional=self._additional(rrsets))
            rr = node.get(qtype)
            if rr is not None:
                if zone.geo and qtype in (RType.A, RType.AAAA):
                    return _Result(_ANSWER, self._geo_filter(rr.with_owner(owner)))
                rr = rr.with_owner(owner)
                return _Result(_ANSWER, ((1.0, (rr,)),), additional=self._additional((rr,)))
            return _Result(_NODATA)
        if key in zone.names or key in view.implied or pol is not None:
            return _Result(_NODATA)
        return _Result(_NXDOMAIN)

    def _find_cut(self, zone: Zone, key: bytes, qtype: int) -> bytes | None:
        """The highest delegation point at or above ``key`` (below the apex), if any."""
        zkey = zone.key
        chain = []
        for s in suffixes(key):
            if len(s) <= len(zkey):
                break
            chain.append(s)
        for s in reversed(chain):
            if s in zone.cuts:
                if s == key and qtype == RType.DS:
                    return None  # DS lives on the parent side of the cut (RFC 4035 3.1.4.1)
                return s
        return None

    def _referral(self, zone: Zone, cut: bytes) -> _Result:
        ns = zone.nodes[cut][RType.NS]
        glue = []
        for rdata in ns.rdatas:
            target = rdata_target(RType.NS, rdata)
            if target is None:
                continue
            tkey = target.lower()
            if not tkey.endswith(zone.key):
                continue  # only in-bailiwick glue
            node = zone.nodes.get(tkey)
            if node:
                glue += [node[t] for t in (RType.A, RType.AAAA) if t in node]
        return _Result(_REFERRAL, authority=(ns,), additional=tuple(glue))

    def _wildcard(self, zone: Zone, key: bytes) -> Mapping[int, RRset] | None:
        """RFC 4592: the ``*`` child of the closest encloser, if it exists."""
        for s in suffixes(key):
            if s == key:
                continue
            if s in zone.names or s == zone.key:
                return zone.nodes.get(b"\x01*" + s)
            if len(s) < len(zone.key):
                break
        return None

    def _additional(self, rrsets: tuple[RRset, ...]) -> tuple[RRset, ...]:
        """Addresses of NS, MX and SRV targets that we serve (RFC 1035 3.3, RFC 2782)."""
        out: list[RRset] = []
        seen: set[bytes] = set()
        for rr in rrsets:
            if rr.rtype not in (RType.NS, RType.MX, RType.SRV):
                continue
            for rdata in rr.rdatas:
                target = rdata_target(rr.rtype, rdata)
                if not target:
                    continue
                tkey = target.lower()
                if tkey in seen:
                    continue
                seen.add(tkey)
                z = self.view.zones.find(tkey)
                node = z.nodes.get(tkey) if z else None
                if node:
                    out += [node[t] for t in (RType.A, RType.AAAA) if t in node]
        return tuple(out)

    def _geo_filter(self, rr: RRset) -> Segment:
        """Quick-start geo zones: the records whose addresses are in the client's region,
        or all of them when none is (or no record address belongs to any region)."""
        rm = self.view.region_map
        bits = 32 if rr.rtype == RType.A else 128
        fam = 4 if bits == 32 else 6
        regions = [rm.match(ClientPrefix(fam, int.from_bytes(rd[0], "big"), bits)) for rd in rr.rdatas]
        if not any(regions):
            return ((1.0, (rr,)),)
        self.used_region = True
        mine = tuple(rd for rd, r in zip(rr.rdatas, regions, strict=True) if r is not None and r == self.cls.region)
        if not mine:
            return ((1.0, (rr,)),)
        return ((1.0, (RRset(rr.name, rr.rtype, rr.ttl, mine),)),)

    # ------------------------------------------------------------------ policies

    def _policy(self, pol: NamePolicy, zone: Zone, owner: bytes, qtype: int, level_region: str | None,
                static: Mapping[int, RRset] | None) -> _Result:
        segments: list[Segment] = []
        families = (4, 6) if qtype == RType.ANY else ((4,) if qtype == RType.A else (6,))
        if qtype == RType.ANY and static:
            segments.append(((1.0, tuple(rr.with_owner(owner) for rr in static.values())),))
        for fam in families:
            sel = self._select(pol, fam, level_region)
            if sel.sorry:
                seg_or_cname = self._sorry(pol, owner, fam)
                if isinstance(seg_or_cname, _Result):
                    if qtype != RType.ANY:
                        return seg_or_cname
                    continue
                if seg_or_cname:
                    segments.append(seg_or_cname)
                continue
            if sel.variants:
                segments.append(tuple((w, (_addr_rrset(owner, fam, [c.packed for c in cands], pol.ttl),))
                                      for w, cands in sel.variants if cands))
        segments = [s for s in segments if s]
        if not segments:
            return _Result(_NODATA)
        if len(segments) == 1:
            return _Result(_ANSWER, segments[0])
        combined: list[tuple[float, tuple[RRset, ...]]] = [(1.0, ())]
        for seg in segments:
            combined = [(w1 * w2, a + b) for w1, a in combined for w2, b in seg][:MAX_VARIANTS]
        return _Result(_ANSWER, tuple(combined))

    def _select(self, pol: NamePolicy, family: int, level_region: str | None) -> Selection:
        view = self.view
        cls = self.cls
        latency_order: tuple[str, ...] = ()
        if level_region is None and pol.policy == "latency" and view.latency:
            latency_order = view.latency.order(cls.latency_row)
        sel = select(pol, view.pools, family, level_region=level_region, client_region=cls.region,
                     default_region=view.region_map.default, latency_order=latency_order)
        if sel.used_region:
            self.used_region = True
        if sel.used_latency:
            self.used_latency = True
        return sel

    def _sorry(self, pol: NamePolicy, owner: bytes, family: int) -> Segment | _Result:
        addrs = []
        for s in pol.sorry:
            try:
                ip = ipaddress.ip_address(s)
            except ValueError:
                target = name_from_text(s)
                rr = RRset(owner, RType.CNAME, pol.ttl, ((CompName(target),),))
                return _Result(_CNAME, ((1.0, (rr,)),), target=target)
            if ip.version == family:
                addrs.append(ip.packed)
        if not addrs:
            return ()
        return ((1.0, (_addr_rrset(owner, family, addrs, pol.ttl),)),)

    # ------------------------------------------------------------------ maps

    def _find_map(self, zone: Zone, key: bytes) -> MapDomain | None:
        maps = self.view.maps
        zkey = zone.key
        for s in suffixes(key):
            m = maps.get(s)
            if m is not None:
                return m
            if len(s) <= len(zkey):
                return None
        return None

    def _region_for(self, m: MapDomain, health_pool: str | None) -> str | None:
        """The mapping level's choice of region for this client (see mapping.py)."""
        view = self.view
        cls = self.cls
        self.used_region = True
        known = m.known_regions(view.region_map.regions)
        pool = view.pools.get(health_pool) if health_pool else None
        first = cls.region if cls.region in known else None
        if first is not None and region_up(pool, first):
            return first
        order: list[str | None] = [first]
        if view.latency and cls.latency_row is not None:
            self.used_latency = True
            order += list(view.latency.order(cls.latency_row))
        order.append(view.region_map.default)
        return choose_region(m, order, known, pool)

    def _map(self, m: MapDomain, zone: Zone, name: bytes, key: bytes, qtype: int):
        """The mapping level for a name at or below ``m.domain``: a _Result (referral or
        CNAME), or ``(level_region, policy_key)`` to answer as that region's level."""
        if m.mode == "delegate":
            if m.role == "region":
                return m.region, key
            policy = self.view.names.get(key)
            region = self._region_for(m, m.pool or (policy.pool if policy else None))
            if region is None or m.is_local(region):
                return region, key
            return self._map_referral(m, m.domain, region)
        # cname mode: X.DOMAIN -> X.REGION.DOMAIN
        labels = _relative_labels(key, m.key)
        by_label = {r.lower(): r for r in m.known_regions(self.view.region_map.regions)}
        region = by_label.get(labels[-1].decode("ascii", "replace")) if labels else None
        if region is not None:
            if m.role == "region" and region != m.region:
                return None, key
            if not m.is_local(region):
                sub = bytes((len(region),)) + region.encode("ascii") + m.domain
                return self._map_referral(m, sub, region)
            policy_key = _join(labels[:-1])[:-1] + m.key if len(labels) > 1 else key
            return region, policy_key
        if len(labels) == 1:
            policy = self.view.names.get(key)
            if policy is None:
                return None, key
            if m.role == "region":
                return m.region, key
            region = self._region_for(m, m.pool or policy.pool)
            if region is None:
                return None, key
            first = name[: name[0] + 1]
            target = first + bytes((len(region),)) + region.encode("ascii") + m.domain
            rr = RRset(name, RType.CNAME, m.ttl, ((CompName(target),),))
            return _Result(_CNAME, ((1.0, (rr,)),), target=target)
        return None, key

    def _map_referral(self, m: MapDomain, owner: bytes, region: str) -> _Result:
        rs = m.regions.get(region)
        servers = rs.name_servers if rs else ()
        ns = RRset(owner, RType.NS, m.ttl, tuple((CompName(n),) for n, _ in servers))
        glue: list[RRset] = []
        for n, addrs in servers:
            v4 = [ipaddress.ip_address(a).packed for a in addrs if ipaddress.ip_address(a).version == 4]
            v6 = [ipaddress.ip_address(a).packed for a in addrs if ipaddress.ip_address(a).version == 6]
            if v4:
                glue.append(_addr_rrset(n, 4, v4, m.ttl))
            if v6:
                glue.append(_addr_rrset(n, 6, v6, m.ttl))
        return _Result(_REFERRAL, authority=(ns,), additional=tuple(glue))


def _join(labels: list[bytes]) -> bytes:
    return b"".join(bytes((len(lb),)) + lb for lb in labels) + b"\x00"

