"""VRRP wire format: version 2 (RFC 3768) and version 3 (RFC 5798), IPv4 and IPv6.

Theory of operation
-------------------
This module turns bytes into an :class:`Advert` and back, and nothing else: no sockets,
no clock, no state. It is the only place that knows where a field sits.

* :func:`decode` parses one VRRP message (the IP payload) inside a bounded reader
  (dnspython's ``restrict_to`` idiom): the message must be consumed *exactly*, so a
  count that promises more addresses than the packet carries, or trailing bytes, are
  errors, never over- or under-reads. Every way a packet can be malformed raises the one
  error type :class:`MalformedPacket`, whose ``reason`` is a short counter key
  (``"checksum"``, ``"length"``...) that the state machine counts drops by.
* :meth:`Advert.encode` builds the message, checksum included. The checksum needs the IP
  addresses of the packet (v3 covers a pseudo-header), so both sides take ``src`` and
  ``dst``.
* :func:`parse_ipv4` and :func:`build_ipv4` handle the IPv4 header that raw IPv4 sockets
  deliver (and that herder writes itself with ``IP_HDRINCL``, as keepalived does), so
  the receiver can check the TTL (RFC 5798 section 7.1). IPv6 raw sockets never show the
  header; the hop limit arrives as ancillary data.

Checksums (the part implementations get wrong, measured against keepalived 2.2.7):

* v2: the 16-bit one's complement of the one's complement sum of the VRRP message,
  starting with the version field, *including* the 8 bytes of authentication data
  (RFC 3768 section 5.3.8). No pseudo-header.
* v3: the same sum over a pseudo-header plus the message (RFC 5798 section 5.2.8): for
  IPv4 ``src, dst, 0, 112, length`` (RFC 768 style), for IPv6 the RFC 8200 section 8.1
  pseudo-header ``src, dst, 32-bit length, 3 zero bytes, 112``. ``dst`` is the address
  the packet was sent to: 224.0.0.18 / ff02::12, or the peer for unicast. keepalived
  before 1.3.7 used the multicast group even for unicast; :func:`decode` accepts that too
  when told the group (``alt_dst``), as keepalived's ``old_unicast_checksum`` does.

Addresses are :mod:`ipaddress` objects (this module must not import :mod:`socket`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

__all__ = [
    "AUTH_DATA_LEN",
    "HEADER_LEN",
    "IPPROTO_VRRP",
    "MCAST_V4",
    "MCAST_V6",
    "TTL",
    "Advert",
    "addresses",
    "IPv4Packet",
    "IPAddress",
    "MalformedPacket",
    "build_ipv4",
    "checksum",
    "decode",
    "encode",
    "parse_ipv4",
    "peek_vrid",
    "pseudo_header",
]

IPAddress = IPv4Address | IPv6Address

#: IP protocol number of VRRP (RFC 5798 section 5.1.1.3; RFC 3768 section 5.2.4).
IPPROTO_VRRP = 112
#: IPv4 TTL / IPv6 hop limit every advert is sent with and must arrive with
#: (RFC 5798 sections 5.1.1.3, 5.1.2.3 and 7.1).
TTL = 255
#: Destination of multicast adverts (RFC 5798 sections 5.1.1.2 and 5.1.2.2).
MCAST_V4 = IPv4Address("224.0.0.18")
MCAST_V6 = IPv6Address("ff02::12")
#: Fixed part of a VRRP message: version/type, VRID, priority, count, two 16-bit fields.
HEADER_LEN = 8
#: VRRPv2's trailing authentication data (RFC 3768 section 5.3.10).
AUTH_DATA_LEN = 8
#: ADVERTISEMENT, the only VRRP message type (RFC 5798 section 5.2.2).
TYPE_ADVERTISEMENT = 1
#: "No Authentication", the only v2 auth type RFC 3768 keeps (section 5.3.6).
AUTH_NONE = 0
#: Largest v3 Max Adver Int: a 12-bit field of centiseconds (RFC 5798 section 5.2.7).
MAX_V3_INTERVAL_CS = 0x0FFF


class MalformedPacket(ValueError):
    """A packet that is not a valid VRRP advertisement. ``reason`` is a short counter key.

    Reasons: ``ip_header`` (IPv4 header unusable), ``length`` (too short, too long, or a
    count that does not fit), ``version`` (neither 2 nor 3), ``type`` (not an
    ADVERTISEMENT), ``checksum``, ``family`` (v2 over IPv6), ``interval`` (an interval of 0).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum.

    An odd-length input is padded with a zero byte. Summing a message whose checksum
    field is already filled in gives 0 when it is correct.
    """
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    """The pseudo-header VRRPv3 checksums cover (RFC 5798 section 5.2.8).

    IPv4: src, dst, a zero byte, the protocol (112), the 16-bit VRRP length. IPv6
    (RFC 8200 section 8.1): src, dst, the 32-bit upper-layer length, three zero bytes,
    the next header (112).
    """
    if src.version != dst.version:
        raise ValueError(f"pseudo-header needs one family: {src} and {dst}")
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_VRRP)


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRP ADVERTISEMENT, as either version carries it.

    ``interval_cs`` is the advertisement interval in centiseconds: VRRPv3's Max Adver Int
    (12 bits, RFC 5798 section 5.2.7) or VRRPv2's Adver Int in whole seconds
    (RFC 3768 section 5.3.7) times 100. ``family`` (4 or 6) says how ``addresses`` are
    encoded; v2 is IPv4 only. Constructing an out-of-range advert raises ValueError (a
    caller bug, not a peer's).
    """

    #: 2 (RFC 3768 section 5.3.1) or 3 (RFC 5798 section 5.2.1).
    version: int
    #: Virtual Router Identifier, 1..255 (RFC 5798 section 5.2.3).
    vrid: int
    #: 0 (the master stops), 1..254 (backups), 255 (the address owner) (section 5.2.4).
    priority: int
    #: Advertisement interval, centiseconds (see the class docstring).
    interval_cs: int
    #: The virtual router's addresses, "Count IPvX Addr" of them (sections 5.2.5, 5.2.9).
    addresses: tuple[IPAddress, ...] = ()
    #: 4 or 6.
    family: int = 4
    #: VRRPv2 Auth Type (RFC 3768 section 5.3.6); 0 is the only one RFC 3768 keeps.
    auth_type: int = AUTH_NONE

    def __post_init__(self) -> None:
        if self.version not in (2, 3):
            raise ValueError(f"VRRP version must be 2 or 3, not {self.version}")
        if self.family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {self.family}")
        if self.version == 2 and self.family != 4:
            raise ValueError("VRRPv2 (RFC 3768) is IPv4 only; IPv6 needs version 3")
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"VRID {self.vrid} is outside 1..255")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} is outside 0..255")
        if len(self.addresses) > 255:
            raise ValueError("at most 255 addresses fit the count field")
        if any(a.version != self.family for a in self.addresses):
            raise ValueError(f"every address must be IPv{self.family}: {self.addresses}")
        if self.version == 2:
            if self.interval_cs % 100 or not 100 <= self.interval_cs <= 255 * 100:
                raise ValueError(f"VRRPv2 interval must be whole seconds 1..255, not {self.interval_cs} cs")
            if not 0 <= self.auth_type <= 255:
                raise ValueError(f"auth type {self.auth_type} is outside 0..255")
        elif not 1 <= self.interval_cs <= MAX_V3_INTERVAL_CS:
            raise ValueError(f"VRRPv3 interval must be 1..4095 cs, not {self.interval_cs}")

    @property
    def interval_s(self) -> float:
        """The advertisement interval in seconds."""
        return self.interval_cs / 100

    def encode(self, src: IPAddress, dst: IPAddress) -> bytes:
        """The VRRP message (the IP payload) with its checksum, sent from ``src`` to ``dst``."""
        return encode(self, src, dst)


def encode(advert: Advert, src: IPAddress, dst: IPAddress) -> bytes:
    """See :meth:`Advert.encode`. ``src``/``dst`` only matter to the v3 checksum."""
    a = advert
    if a.version == 2:
        # RFC 3768 section 5.3: version|type, VRID, priority, count, auth type, adver int (s)
        head = struct.pack("!BBBBBB", (2 << 4) | TYPE_ADVERTISEMENT, a.vrid, a.priority,
                           len(a.addresses), a.auth_type, a.interval_cs // 100)
        tail = b"\0" * AUTH_DATA_LEN  # section 5.3.10: auth data, zero for type 0
    else:
        # RFC 5798 section 5.2: version|type, VRID, priority, count, rsvd(4)|max adver int(12)
        head = struct.pack("!BBBBH", (3 << 4) | TYPE_ADVERTISEMENT, a.vrid, a.priority,
                           len(a.addresses), a.interval_cs & MAX_V3_INTERVAL_CS)
        tail = b""
    body = b"".join(addr.packed for addr in a.addresses) + tail
    msg = head + b"\0\0" + body
    if a.version == 2:
        csum = checksum(msg)
    else:
        if src.version != a.family or dst.version != a.family:
            raise ValueError(f"an IPv{a.family} advert needs IPv{a.family} src and dst, not {src} -> {dst}")
        csum = checksum(pseudo_header(src, dst, len(msg)) + msg)
    return head + struct.pack("!H", csum) + body


class _Reader:
    """A bounded cursor over bytes (dnspython's parser with ``restrict_to``)."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise MalformedPacket("length", f"{what}: need {n} bytes, {self.remaining()} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    @contextmanager
    def restrict_to(self, n: int, what: str) -> Iterator[None]:
        """Parse exactly ``n`` bytes inside the block: no over-read, no bytes left over."""
        if n > self.remaining():
            raise MalformedPacket("length", f"{what}: needs {n} bytes, the packet has {self.remaining()}")
        saved, self.end = self.end, self.pos + n
        try:
            yield
            if self.pos != self.end:
                raise MalformedPacket("length", f"{what}: {self.end - self.pos} byte(s) left unparsed")
        finally:
            self.end = saved


def peek_vrid(data: bytes) -> int | None:
    """The VRID byte of a VRRP message, without validating anything (for demultiplexing)."""
    return data[1] if len(data) >= 2 else None


def decode(data: bytes, src: IPAddress, dst: IPAddress, *, family: int | None = None,
           verify_checksum: bool = True, alt_dst: IPAddress | None = None) -> Advert:
    """Parse one VRRP message (the IP payload) received from ``src`` for ``dst``.

    Args:
        data: the VRRP message, starting at the version field.
        src, dst: the packet's IP addresses (the v3 checksum covers them).
        family: 4 or 6, how addresses are encoded; defaults to ``src``'s family.
        verify_checksum: False skips the check (for tests that build broken packets).
        alt_dst: another destination to try for the v3 pseudo-header when the checksum
            fails with ``dst`` (keepalived's pre-1.3.7 unicast checksums used the group).

    Returns:
        The advert. Only the message's own consistency is checked here; whether it fits
        the local virtual router (VRID, interval, addresses, TTL) is the state machine's
        business (RFC 5798 section 7.1).

    Raises:
        MalformedPacket: the bytes are not a well-formed advertisement; ``reason`` says why.
    """
    fam = family or src.version
    alen = 4 if fam == 4 else 16
    r = _Reader(data)
    vt, vrid, prio, count = r.take(4, "header")
    version, ptype = vt >> 4, vt & 0x0F
    if version not in (2, 3):
        raise MalformedPacket("version", f"version {version}, expected 2 or 3")
    if ptype != TYPE_ADVERTISEMENT:
        raise MalformedPacket("type", f"type {ptype}, expected 1 (ADVERTISEMENT)")
    if version == 2 and fam != 4:
        raise MalformedPacket("family", "VRRPv2 over IPv6")
    word, csum = struct.unpack("!HH", r.take(4, "header"))
    body_len = count * alen + (AUTH_DATA_LEN if version == 2 else 0)
    addrs: list[IPAddress] = []
    with r.restrict_to(body_len, f"{count} IPv{fam} address(es)" + (" and auth data" if version == 2 else "")):
        for _ in range(count):
            raw = r.take(alen, "address")
            addrs.append(IPv4Address(raw) if fam == 4 else IPv6Address(raw))
        if version == 2:
            r.take(AUTH_DATA_LEN, "auth data")
    if r.remaining():
        raise MalformedPacket("length", f"{r.remaining()} byte(s) after the advertisement")
    if version == 2:
        auth_type, adver_int = word >> 8, word & 0xFF
        if adver_int == 0:
            raise MalformedPacket("interval", "advertisement interval 0")
        interval_cs = adver_int * 100
    else:
        auth_type, interval_cs = AUTH_NONE, word & MAX_V3_INTERVAL_CS  # rsvd bits ignored (5.2.6)
        if interval_cs == 0:
            raise MalformedPacket("interval", "max advertisement interval 0")
    if verify_checksum:
        msg = data[:HEADER_LEN + body_len]
        if version == 2:
            ok = checksum(msg) == 0
        else:
            ok = checksum(pseudo_header(src, dst, len(msg)) + msg) == 0
            if not ok and alt_dst is not None and alt_dst != dst:
                ok = checksum(pseudo_header(src, alt_dst, len(msg)) + msg) == 0
        if not ok:
            raise MalformedPacket("checksum", f"bad VRRPv{version} checksum 0x{csum:04x}")
    return Advert(version=version, vrid=vrid, priority=prio, interval_cs=interval_cs,
                  addresses=tuple(addrs), family=fam, auth_type=auth_type)


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    """What a raw IPv4 socket delivers: the header fields VRRP cares about, and the payload."""

    src: IPv4Address
    dst: IPv4Address
    ttl: int
    protocol: int
    tos: int
    payload: bytes


def parse_ipv4(data: bytes) -> IPv4Packet:
    """Split a raw IPv4 packet (header included) into header fields and payload.

    Raises MalformedPacket (``ip_header``) for a header that is short, not IPv4, has an
    IHL below 5, or a total length that disagrees with the data; fragments are refused
    (VRRP adverts are never fragmented).
    """
    if len(data) < 20:
        raise MalformedPacket("ip_header", f"{len(data)} bytes is shorter than an IPv4 header")
    vihl, tos, total, _ident, frag, ttl, proto = struct.unpack("!BBHHHBB", data[:10])
    if vihl >> 4 != 4:
        raise MalformedPacket("ip_header", f"IP version {vihl >> 4}")
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or ihl > len(data):
        raise MalformedPacket("ip_header", f"header length {ihl}")
    if total != len(data):
        raise MalformedPacket("length", f"IP total length {total}, received {len(data)}")
    if frag & 0x3FFF:
        raise MalformedPacket("ip_header", "fragment")
    return IPv4Packet(IPv4Address(data[12:16]), IPv4Address(data[16:20]), ttl, proto, tos, data[ihl:])


def build_ipv4(src: IPv4Address, dst: IPv4Address, payload: bytes, *, ttl: int = TTL, tos: int = 0xC0,
               protocol: int = IPPROTO_VRRP, ident: int = 0) -> bytes:
    """An IPv4 header plus ``payload``, for a raw socket with ``IP_HDRINCL``.

    TOS 0xc0 (internetwork control) and TTL 255 are what keepalived sends. The header
    checksum is computed here too (the kernel recomputes it anyway).
    """
    head = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, 0, ttl, protocol, 0,
                       src.packed, dst.packed)
    csum = checksum(head)
    return head[:10] + struct.pack("!H", csum) + head[12:] + payload


def addresses(values: Sequence[str | IPAddress]) -> tuple[IPAddress, ...]:
    """Addresses from strings or address objects (a convenience for callers and tests)."""
    return tuple(v if isinstance(v, (IPv4Address, IPv6Address)) else ip_address(v) for v in values)
