"""DNS discovery: A/AAAA or SRV records become servers, re-resolved when their TTL expires.

HAProxy's ``server-template`` with a ``resolvers`` section, in one table::

    [[pools.web.discovery]]
    type = "dns"
    name = "_http._tcp.example.test"   # SRV: the records carry port, weight, priority
    resolver = "127.0.0.1:5353"        # default: the name servers of /etc/resolv.conf
    prefix = "web"                     # servers are named web1, web2, ... (server-template)

    [[pools.api.discovery]]
    type = "dns"
    name = "api.example.test"
    qtype = "A"                        # A, AAAA or SRV (default: SRV for a name starting
    port = 8080                        #   with "_", else A); A/AAAA need a port

Theory of operation
-------------------
Each round sends one query (plus, for SRV targets missing from the additional section,
one A query per target, then AAAA if there is no A) to the first configured name server
that answers; a truncated UDP answer is retried over TCP. The next round is due when the
answer's smallest TTL expires, clamped to ``ttl_min`` .. ``ttl_max``.

* An answer with records replaces the set. Names are stable, as with HAProxy's
  server-template: a record that stays keeps its name (``prefix`` + index); a new record
  takes the lowest free index; ``count`` (optional) caps the number of servers.
* An authoritative "nothing" (NXDOMAIN, or NOERROR without records) empties the set only
  after it has lasted ``hold_nx`` (HAProxy ``hold nx``, default 30 s); until then the
  last set stays.
* A failure (timeout, SERVFAIL, REFUSED, a malformed answer) keeps the last set and is
  retried after ``ttl_min``; it is logged once per change of error.

SRV records map to servers as: target address and port from the record, weight = the SRV
weight (0 becomes 1: herder's 0 means "no new traffic"), and records with a priority
above the lowest are backups. ``meta`` keeps ``dns_target``, ``srv_priority`` and
``srv_weight``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from herder.config.schema import INVALID, Addr, Duration, Field, Int, ListOf, Str, Table
from herder.discovery.base import PollingSource, register_source
from herder.pool.model import Endpoint, Server, frozen_map
from herder.pool.state import PoolState

__all__ = ["DnsSource", "Record", "SlotNames", "records_from"]

log = logging.getLogger(__name__)


class ResolveError(Exception):
    """No name server gave a usable answer."""


class Empty(Exception):
    """An authoritative answer without records (NXDOMAIN or NODATA); ``ttl`` is the
    negative-caching TTL when the answer carried an SOA."""

    def __init__(self, what: str, ttl: float | None) -> None:
        super().__init__(what)
        self.ttl = ttl


@dataclass(frozen=True, slots=True)
class Record:
    """One discovered endpoint: ``key`` identifies it across rounds (the address for
    A/AAAA, target and port for SRV)."""

    key: tuple
    address: Endpoint
    weight: int = 1
    priority: int = 0
    target: str = ""
    srv_weight: int | None = None


class SlotNames:
    """Stable server names ``prefix + index`` (HAProxy server-template slots).

    A key keeps its index while it stays; new keys take the lowest free indexes, in
    sorted order so that the result does not depend on the order of the answer.
    """

    def __init__(self, prefix: str, count: int | None = None) -> None:
        self.prefix = prefix
        self.count = count
        self._slots: dict[tuple, int] = {}

    def assign(self, keys: Iterable[tuple]) -> tuple[dict[tuple, str], list[tuple]]:
        """Names for ``keys``; returns ``(names, dropped)`` where ``dropped`` are the keys
        that found no slot because ``count`` is reached."""
        wanted = sorted(set(keys))
        self._slots = {k: i for k, i in self._slots.items() if k in wanted}
        used = set(self._slots.values())
        dropped = []
        nxt = 1
        for k in wanted:
            if k in self._slots:
                continue
            while nxt in used:
                nxt += 1
            if self.count is not None and nxt > self.count:
                dropped.append(k)
                continue
            self._slots[k] = nxt
            used.add(nxt)
        return {k: f"{self.prefix}{i}" for k, i in self._slots.items()}, dropped


def _min_ttl(rrsets: Iterable) -> float | None:
    ttls = [r.ttl for r in rrsets]
    return float(min(ttls)) if ttls else None


def negative_ttl(msg: dns.message.Message) -> float | None:
    """The negative-caching TTL of an empty answer: min(SOA TTL, SOA minimum) (RFC 2308 §5)."""
    for rrset in msg.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, min(rd.minimum for rd in rrset)))
    return None


def records_from(msg: dns.message.Message, qtype: int, port: int | None, weight: int) -> tuple[list[Record], float | None, list[str]]:
    """The records of an answer, its smallest TTL, and the SRV targets that still need an
    address (their records are returned later by :meth:`DnsSource.resolve`).

    Raises:
        Empty: NXDOMAIN, or an answer without records of ``qtype``.
    """
    rcode = msg.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise Empty("NXDOMAIN", negative_ttl(msg))
    if rcode != dns.rcode.NOERROR:
        raise ResolveError(f"rcode {dns.rcode.to_text(rcode)}")
    rrsets = [r for r in msg.answer if r.rdtype == qtype]
    if not rrsets:
        raise Empty("no records (NODATA)", negative_ttl(msg))
    ttl = _min_ttl([r for r in msg.answer if r.rdtype in (qtype, dns.rdatatype.CNAME)])
    out: list[Record] = []
    if qtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        assert port is not None
        for rrset in rrsets:
            for rd in rrset:
                out.append(Record((rd.address,), Endpoint(rd.address, port), weight))
        return out, ttl, []
    # SRV: addresses from the additional section when the server sent them
    addrs: dict[str, list[str]] = {}
    for rrset in msg.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addrs.setdefault(rrset.name.to_text().lower(), []).extend(rd.address for rd in rrset)
            t = rrset.ttl
            ttl = t if ttl is None else min(ttl, t)
    missing: list[str] = []
    for rrset in rrsets:
        for rd in rrset:
            target = rd.target.to_text().lower()
            if target == ".":
                continue  # RFC 2782: "service decidedly not available at this domain"
            found = addrs.get(target)
            if not found:
                missing.append(target)
                out.append(Record((target, rd.port), Endpoint("0.0.0.0", rd.port), max(1, rd.weight), rd.priority,
                                  target, rd.weight))
                continue
            out.append(Record((target, rd.port), Endpoint(found[0], rd.port), max(1, rd.weight), rd.priority,
                              target, rd.weight))
    return out, ttl, sorted(set(missing))


class DnsSource(PollingSource):
    """Resolve one name into servers (see the module docstring)."""

    kind = "dns"

    def __init__(self, pool_state: PoolState, pool: str, spec: Mapping[str, object]) -> None:
        super().__init__(pool_state, pool, spec, str(spec["name"]))
        self.qname = dns.name.from_text(str(spec["name"]))
        self.qtype = dns.rdatatype.from_text(str(spec["qtype"]))
        self.port = spec.get("port")
        self.weight = int(spec.get("weight") or 1)  # type: ignore[call-overload]
        self.timeout = float(spec.get("timeout") or 2.0)  # type: ignore[arg-type]
        self.ttl_min = float(spec.get("ttl_min") or 1.0)  # type: ignore[arg-type]
        self.ttl_max = float(spec.get("ttl_max") or 300.0)  # type: ignore[arg-type]
        self.hold_nx = float(spec.get("hold_nx") if spec.get("hold_nx") is not None else 30.0)  # type: ignore[arg-type]
        resolvers = spec.get("resolver")
        if resolvers:
            self.nameservers = [(e.host, e.port) for e in resolvers]  # type: ignore[union-attr]
        else:
            try:
                system = dns.resolver.Resolver().nameservers
            except dns.resolver.NoResolverConfiguration:
                system = []  # every round then fails with "no name server configured"
            self.nameservers = [(ns, 53) for ns in system if isinstance(ns, str)]
        self.names = SlotNames(str(spec.get("prefix") or "srv"), spec.get("count"))  # type: ignore[arg-type]
        self.first_timeout = self.timeout * max(1, len(self.nameservers)) * 2 + 1
        self.retry_s = self.ttl_min
        self._empty_since: float | None = None
        self._last_error: str | None = None

    # -------------------------------------------------------------- queries

    async def query(self, qname: dns.name.Name, rdtype: int) -> dns.message.Message:
        """Ask the configured name servers in turn; the first NOERROR/NXDOMAIN wins."""
        last = "no name server configured"
        for host, port in self.nameservers:
            q = dns.message.make_query(qname, rdtype)
            try:
                resp = await dns.asyncquery.udp(q, host, timeout=self.timeout, port=port)
                if resp.flags & dns.flags.TC:
                    resp = await dns.asyncquery.tcp(q, host, timeout=self.timeout, port=port)
            except dns.exception.Timeout:
                last = f"{host}:{port}: timeout after {self.timeout:g}s"
                continue
            except (OSError, dns.exception.DNSException) as e:
                last = f"{host}:{port}: {e}"
                continue
            if resp.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return resp
            last = f"{host}:{port}: rcode {dns.rcode.to_text(resp.rcode())}"
        raise ResolveError(last)

    async def resolve(self) -> tuple[list[Record], float | None]:
        """One round of queries: the records and the smallest TTL (raises Empty or
        ResolveError)."""
        msg = await self.query(self.qname, self.qtype)
        records, ttl, missing = records_from(msg, self.qtype, self.port, self.weight)  # type: ignore[arg-type]
        if missing:
            found: dict[str, str] = {}
            for target in missing:
                for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    try:
                        sub = await self.query(dns.name.from_text(target), rdtype)
                        recs, t, _ = records_from(sub, rdtype, 0, 1)
                    except Empty:
                        continue
                    found[target] = recs[0].address.host
                    ttl = t if ttl is None else (ttl if t is None else min(ttl, t))
                    break
            kept = []
            for r in records:
                if r.target in missing:
                    if r.target not in found:
                        log.warning("pool %s: discovery %s: SRV target %s has no address; skipped",
                                    self.pool, self.source, r.target)
                        continue
                    r = Record(r.key, Endpoint(found[r.target], r.address.port), r.weight, r.priority, r.target,
                               r.srv_weight)
                kept.append(r)
            records = kept
        return records, ttl

    def _clamp(self, ttl: float | None) -> float:
        if ttl is None:
            return self.ttl_min
        return min(self.ttl_max, max(self.ttl_min, ttl))

    # -------------------------------------------------------------- rounds

    async def poll(self) -> float:
        try:
            records, ttl = await self.resolve()
        except Empty as e:
            return self._empty(str(e), e.ttl)
        except ResolveError as e:
            self._error(str(e))
            return self.ttl_min
        if self._last_error is not None:
            log.info("pool %s: discovery %s: resolving again", self.pool, self.source)
            self._last_error = None
        self._empty_since = None
        self.publish(self._servers(records))
        return self._clamp(ttl)

    def _servers(self, records: list[Record]) -> list[Server]:
        names, dropped = self.names.assign(r.key for r in records)
        if dropped:
            log.warning("pool %s: discovery %s: %d record(s) beyond count %s ignored", self.pool, self.source,
                        len(dropped), self.names.count)
        best = min((r.priority for r in records), default=0)
        out = []
        for r in sorted(records, key=lambda r: names.get(r.key, "")):
            name = names.get(r.key)
            if name is None:
                continue
            meta: dict[str, object] = {}
            if r.target:
                meta = {"dns_target": r.target, "srv_priority": r.priority, "srv_weight": r.srv_weight}
            out.append(Server(name=name, address=r.address, weight=r.weight, backup=r.priority > best,
                              meta=frozen_map(meta)))
        return sorted(out, key=lambda s: (len(s.name), s.name))

    def _empty(self, what: str, ttl: float | None) -> float:
        now = time.monotonic()
        if not self.servers:
            self._empty_since = None
            self.publish(())
            return self._clamp(ttl)
        if self._empty_since is None:
            self._empty_since = now
            log.warning("pool %s: discovery %s: %s; keeping the last %d server(s) for hold_nx %gs",
                        self.pool, self.source, what, len(self.servers), self.hold_nx)
        held = now - self._empty_since
        if held >= self.hold_nx:
            log.warning("pool %s: discovery %s: %s for %.1fs; removing its servers", self.pool, self.source,
                        what, held)
            self._empty_since = None
            self.names.assign(())
            self.publish(())
            return self._clamp(ttl)
        return max(0.01, min(self._clamp(ttl), self.hold_nx - held))

    def _error(self, why: str) -> None:
        if why != self._last_error:
            self._last_error = why
            log.warning("pool %s: discovery %s: resolution failed (%s); keeping the last %d server(s)",
                        self.pool, self.source, why, len(self.servers or ()))


_QTYPES = ("A", "AAAA", "SRV")


def _build(v: dict, path, ctx):
    ok = True
    try:
        dns.name.from_text(v["name"])
    except dns.exception.DNSException as e:
        ctx.error((*path, "name"), f"bad DNS name {v['name']!r}: {e}")
        ok = False
    if v["qtype"] is None:
        v["qtype"] = "SRV" if v["name"].startswith("_") else "A"
    v["qtype"] = v["qtype"].upper()
    if v["qtype"] != "SRV" and v["port"] is None:
        ctx.error(path, f"missing required key 'port' ({v['qtype']} records carry no port; SRV records do)")
        ok = False
    if v["resolver"] is not None:
        v["resolver"] = tuple(v["resolver"])
    if v["ttl_min"] > v["ttl_max"]:
        ctx.error((*path, "ttl_min"), f"ttl_min ({v['ttl_min']:g}s) is above ttl_max ({v['ttl_max']:g}s)")
        ok = False
    return v if ok else INVALID


TABLE = Table({
    "type": Field(Str(), required=True),
    "name": Field(Str(what="a DNS name"), required=True),
    "qtype": Field(Str(choices=_QTYPES + tuple(t.lower() for t in _QTYPES))),
    "resolver": Field(ListOf(Addr(default_port=53), single_ok=True),
                      doc="name server(s) to ask, host[:port]; default: /etc/resolv.conf"),
    "port": Field(Int(1, 65535), doc="server port for A/AAAA records"),
    "prefix": Field(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a server name prefix"), default="srv"),
    "count": Field(Int(1, 100000), doc="at most this many servers (server-template's number)"),
    "weight": Field(Int(0, 65535), default=1, doc="weight of servers from A/AAAA records"),
    "timeout": Field(Duration(min=0.01), default=2.0, doc="per query and name server"),
    "ttl_min": Field(Duration(min=0.01), default=1.0, doc="never re-resolve sooner"),
    "ttl_max": Field(Duration(min=0.01), default=300.0, doc="re-resolve at least this often"),
    "hold_nx": Field(Duration(min=0.0), default=30.0, doc="keep servers this long after NXDOMAIN/NODATA"),
}, build=_build, what="a dns discovery table")

register_source("dns", TABLE, DnsSource)
