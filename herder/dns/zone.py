"""Zones: authoritative data from RFC 1035 master files and from herder's config.

Theory of operation
-------------------
Zone text (a master file, or the ``records`` lines of a ``[dns.zones.NAME]`` table) is
parsed by dnspython -- ``$ORIGIN``, ``$TTL``, ``$GENERATE``, relative names, escapes and
every record type come for free (``$INCLUDE`` is refused, as dnspython does by default: a
zone must not read arbitrary files) -- then converted once into the form the answer function
uses: a dict from lookup key (lower-case wire name) to ``{type: RRset}``, where each RRset
is already laid out for :func:`herder.dns.wire.encode_response` (names inside RDATA that
may be compressed are :class:`~herder.dns.wire.CompName`, everything else raw octets).
dnspython is never touched again on the query path.

Besides the nodes, a :class:`Zone` precomputes what RFC 1034 4.3.2's lookup needs:

* ``names`` -- every name that exists, empty non-terminals included (a query for an
  empty non-terminal is NODATA, not NXDOMAIN; RFC 8020);
* ``cuts`` -- the delegation points (NS records below the apex), answered with a referral;
* ``wildcards`` -- whether any ``*`` owner exists (RFC 4592 synthesis is then tried).

A zone must have an SOA at its apex: its MINIMUM and TTL give the negative TTL of NXDOMAIN
and NODATA answers (RFC 2308 5). Records outside the origin are ignored by dnspython's
reader, as BIND ignores out-of-zone data.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone

from herder.dns.wire import CompName, RData, RRset, RType, name_to_text, suffixes

__all__ = [
    "Zone",
    "ZoneError",
    "ZoneSet",
    "load_zone_file",
    "load_zone_text",
    "origin_from_filename",
    "rdata_target",
    "zone_from_records",
]

log = logging.getLogger(__name__)

#: Default negative TTL / SOA MINIMUM of a zone generated from the config.
DEFAULT_NEGATIVE_TTL = 60


class ZoneError(ValueError):
    """A zone cannot be loaded. ``line`` is the 1-based line of the zone text (None when
    unknown); ``str()`` names the file and line."""

    def __init__(self, message: str, *, filename: str = "", line: int | None = None) -> None:
        self.message = message
        self.filename = filename
        self.line = line
        where = f"{filename}:{line}: " if filename and line else (f"{filename}: " if filename else "")
        super().__init__(where + message)


@dataclass(frozen=True, eq=False)
class Zone:
    """One zone's authoritative data, ready for lookups. Immutable after loading."""

    origin: bytes
    soa: RRset
    nodes: Mapping[bytes, Mapping[int, RRset]]
    names: frozenset[bytes]
    cuts: frozenset[bytes]
    wildcards: bool
    #: Answer A/AAAA RRsets by the region of their addresses (``herder dns serve --regions``).
    geo: bool = False
    #: Where the zone came from (a file name or a config location), for logs.
    source: str = ""

    @property
    def key(self) -> bytes:
        return self.origin.lower()

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 5: the smaller of the SOA record's TTL and its MINIMUM field."""
        minimum = struct.unpack("!I", self.soa.rdatas[0][-1][-4:])[0]
        return min(self.soa.ttl, minimum)

    def negative_soa(self) -> RRset:
        """The SOA for the authority section of NXDOMAIN / NODATA, with the negative TTL."""
        return self.soa.with_ttl(self.negative_ttl)

    def rrset(self, key: bytes, rtype: int) -> RRset | None:
        node = self.nodes.get(key)
        return node.get(rtype) if node else None

    def __repr__(self) -> str:
        return f"<Zone {name_to_text(self.origin)} {len(self.nodes)} names from {self.source or '?'}>"


class ZoneSet:
    """The zones a server is authoritative for, found by longest suffix."""

    def __init__(self, zones: Iterable[Zone] = ()) -> None:
        self.by_key: dict[bytes, Zone] = {}
        for z in zones:
            if z.key in self.by_key:
                raise ZoneError(f"zone {name_to_text(z.origin)} is defined twice "
                                f"({self.by_key[z.key].source} and {z.source})")
            self.by_key[z.key] = z

    def find(self, key: bytes) -> Zone | None:
        """The most specific zone containing ``key`` (a lookup key), or None."""
        by_key = self.by_key
        for s in suffixes(key):
            z = by_key.get(s)
            if z is not None:
                return z
        return None

    def __iter__(self):
        return iter(self.by_key.values())

    def __len__(self) -> int:
        return len(self.by_key)


# --------------------------------------------------------------------------- conversion


def _name(n: dns.name.Name) -> bytes:
    return n.to_wire()


def rdata_parts(rd: dns.rdata.Rdata) -> RData:
    """One dnspython rdata in the encoder's layout (see :class:`~herder.dns.wire.CompName`)."""
    t = rd.rdtype
    if t in (dns.rdatatype.CNAME, dns.rdatatype.NS, dns.rdatatype.PTR):
        return (CompName(_name(rd.target)),)
    if t == dns.rdatatype.MX:
        return (struct.pack("!H", rd.preference), CompName(_name(rd.exchange)))
    if t == dns.rdatatype.SOA:
        return (CompName(_name(rd.mname)), CompName(_name(rd.rname)),
                struct.pack("!IIIII", rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum))
    # Everything else (A, AAAA, TXT, SRV, CAA, ...) is raw octets; names in it are not
    # compressed (RFC 3597 4 forbids compressing the newer types).
    return (rd.to_wire(),)


def rdata_target(rtype: int, rdata: RData) -> bytes | None:
    """The host name whose addresses belong in the additional section (NS, MX, SRV), or
    the CNAME target; None for other types."""
    if rtype in (RType.NS, RType.CNAME):
        return bytes(rdata[0])
    if rtype == RType.MX:
        return bytes(rdata[1])
    if rtype == RType.SRV:
        raw = rdata[0]
        return raw[6:] if len(raw) > 6 else None
    return None


def _build(z: dns.zone.Zone, *, source: str, geo: bool) -> Zone:
    origin = z.origin
    assert origin is not None
    nodes: dict[bytes, dict[int, RRset]] = {}
    spelled: dict[bytes, bytes] = {}
    for name, node in z.nodes.items():
        absolute = name if name.is_absolute() else name.derelativize(origin)
        wire = _name(absolute)
        key = wire.lower()
        spelled.setdefault(key, wire)
        types = nodes.setdefault(key, {})
        for rds in node.rdatasets:
            if rds.rdclass != dns.rdataclass.IN:
                continue
            types[int(rds.rdtype)] = RRset(spelled[key], int(rds.rdtype), int(rds.ttl),
                                           tuple(rdata_parts(rd) for rd in rds))
    okey = _name(origin).lower()
    apex = nodes.get(okey, {})
    soa = apex.get(RType.SOA)
    if soa is None:
        raise ZoneError(f"zone {origin.to_text()} has no SOA record at its apex", filename=source)
    names: set[bytes] = set()
    for key, types in nodes.items():
        if not types:
            continue
        for s in suffixes(key):
            names.add(s)
            if s == okey:
                break
    cuts = frozenset(k for k, types in nodes.items() if k != okey and RType.NS in types)
    wild = any(k.startswith(b"\x01*") for k in nodes)
    return Zone(
        origin=_name(origin), soa=soa,
        nodes={k: dict(v) for k, v in nodes.items() if v},
        names=frozenset(names), cuts=cuts, wildcards=wild, geo=geo, source=source,
    )


_LINE = re.compile(r"^(?:(?P<file>.*?):)?(?P<line>\d+): (?P<msg>.*)$", re.S)


def load_zone_text(text: str, origin: str | None = None, *, filename: str = "<zone>",
                   geo: bool = False) -> Zone:
    """Parse master-file text (RFC 1035 5) into a :class:`Zone`.

    ``origin`` may be None when the text starts with ``$ORIGIN``. Raises
    :class:`ZoneError` (with the line when dnspython gives one) for syntax errors, a
    missing SOA, or a CNAME next to other data.
    """
    try:
        o = dns.name.from_text(origin) if origin else None
        z = dns.zone.from_text(text, origin=o, relativize=False, check_origin=False, filename=filename)
    except dns.exception.SyntaxError as e:
        m = _LINE.match(str(e))
        if m:
            raise ZoneError(m.group("msg"), filename=filename, line=int(m.group("line"))) from None
        raise ZoneError(str(e), filename=filename) from None
    except dns.exception.DNSException as e:
        raise ZoneError(f"{type(e).__name__}: {e}", filename=filename) from None
    except (ValueError, UnicodeError) as e:
        raise ZoneError(str(e), filename=filename) from None
    return _build(z, source=filename, geo=geo)


_ORIGIN_DIRECTIVE = re.compile(r"^\s*\$ORIGIN\s+(\S+)", re.M | re.I)


def origin_from_filename(path: str) -> str:
    """Guess a zone's origin from a file name: ``example.com.zone``, ``example.com.db``,
    ``db.example.com`` and ``example.com`` all give ``example.com.``."""
    base = Path(path).name
    for suffix in (".zone", ".db", ".txt"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if base.startswith("db."):
        base = base[3:]
    return base.rstrip(".") + "."


def load_zone_file(path: str, origin: str | None = None, *, geo: bool = False) -> Zone:
    """Load a master file. Without ``origin``, the file's leading ``$ORIGIN`` is used,
    else the origin is guessed from the file name (:func:`origin_from_filename`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ZoneError(f"cannot read zone file: {reason}", filename=path) from None
    if origin is None and not _ORIGIN_DIRECTIVE.search(text):
        origin = origin_from_filename(path)
    return load_zone_text(text, origin, filename=path, geo=geo)


def zone_from_records(origin: str, records: Iterable[str], *, ttl: int = 3600, soa: str | None = None,
                      filename: str = "<config>", geo: bool = False) -> tuple[Zone | None, list[tuple[int | None, str]]]:
    """A zone from the config's inline ``records`` (master-file lines relative to
    ``origin``). Without an SOA among the records, one is generated from ``soa`` (SOA
    RDATA text) or defaults (``ns1.ORIGIN. hostmaster.ORIGIN. 1 3600 600 86400 60``).

    Returns ``(zone or None, errors)``; each error is ``(index of the record or None,
    message)`` so the caller can point at the config line.
    """
    lines = [r for r in records]
    has_soa = any(re.search(r"(^|\s)SOA(\s|$)", ln, re.I) for ln in lines)
    header = [f"$TTL {ttl}"]
    if has_soa and soa:
        return None, [(None, "an SOA is given both in `soa` and among the records")]
    if not has_soa:
        o = origin.rstrip(".") + "."
        header.append(f"@ IN SOA {soa}" if soa else
                      f"@ IN SOA ns1.{o} hostmaster.{o} 1 3600 600 86400 {DEFAULT_NEGATIVE_TTL}")
    text = "\n".join(header + lines) + "\n"
    try:
        return load_zone_text(text, origin, filename=filename, geo=geo), []
    except ZoneError as e:
        first = e
    # dnspython sometimes reports the line after the bad one (the tokenizer has already
    # read the newline): find the first record that fails by itself, in order.
    for idx, line in enumerate(lines):
        try:
            load_zone_text("\n".join(header + [line]) + "\n", origin, filename=filename)
        except ZoneError as e:
            if e.line is not None and e.line > len(header):
                return None, [(idx, e.message)]
            if "SOA" not in e.message:
                return None, [(idx, e.message)]
    try:
        load_zone_text("\n".join(header) + "\n", origin, filename=filename)
    except ZoneError as e:
        return None, [(None, f"in the SOA: {e.message}")]
    return None, [(None, first.message)]
