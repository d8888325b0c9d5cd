"""Region maps: which region a client belongs to, and for how wide a prefix that holds.

Theory of operation
-------------------
A :class:`RegionMap` holds CIDR prefixes, each naming a region, plus a default region for
clients that match none. :meth:`RegionMap.lookup` takes a client prefix (a full address
from the packet's source, or the address and SOURCE PREFIX-LENGTH of an EDNS Client
Subnet option) and returns the region of the **longest matching prefix** together with
the **scope**: the prefix length for which that answer holds, which the server echoes
as the ECS SCOPE PREFIX-LENGTH (RFC 7871 7.2.1).

The scope is the matched prefix length, except where that would be a lie:

* if more specific prefixes sit inside the matched one (198.18.0.0/16 -> eu, with
  198.18.7.0/24 -> us inside it), a client in 198.18.1.0 gets eu with scope 17..24 --
  just long enough that the client's block contains no address of the nested prefix;
* a client that matches nothing gets the default region with the shortest scope that
  keeps its block clear of every configured prefix (scope 0 only when the map is empty),
  so a resolver never caches the default answer for clients of a region;
* when the client gave fewer bits than the map needs to decide (ECS /16 against a /24
  map), the answer is the best match for the bits given, with scope = the source length.

The map is a binary trie walked bit by bit: the walk stops where the trie has no branch
for the client's next bit, and that depth *is* the shortest distinguishing prefix. Lookups
are pure; the server caches them per client prefix.

:class:`LatencyTable` reuses the trie for the latency policy: a client prefix -> the
measured latency to each region, so regions can be ordered nearest first.

Pure: no I/O, no clock (the map file is read by :func:`read_map_file`'s caller).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["ClientPrefix", "LatencyTable", "MapFileError", "RegionMap", "parse_map_text"]

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientPrefix:
    """A client as the mapping sees it: ``family`` 4 or 6, the address as an integer, and
    how many leading bits of it are known (32/128 for a packet source, the ECS source
    length otherwise)."""

    family: int
    address: int
    known_bits: int

    @classmethod
    def from_text(cls, text: str) -> ClientPrefix:
        """``"198.18.1.7"`` or ``"198.18.1.0/24"`` (for tests and tools)."""
        net = ipaddress.ip_network(text, strict=False)
        return cls(net.version, int(net.network_address), net.prefixlen)


class _Node:
    __slots__ = ("zero", "one", "value", "plen")

    def __init__(self) -> None:
        self.zero: _Node | None = None
        self.one: _Node | None = None
        self.value: object = None
        self.plen = -1


class _Trie:
    """Binary trie over one address family: longest-prefix match plus the scope."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.root = _Node()
        self.empty = True

    def insert(self, net: int, plen: int, value: object) -> bool:
        """Add a prefix; False when the exact prefix was already present (first wins)."""
        node = self.root
        for d in range(plen):
            bit = (net >> (self.bits - 1 - d)) & 1
            nxt = node.one if bit else node.zero
            if nxt is None:
                nxt = _Node()
                if bit:
                    node.one = nxt
                else:
                    node.zero = nxt
            node = nxt
        self.empty = False
        if node.plen >= 0:
            return False
        node.value = value
        node.plen = plen
        return True

    def lookup(self, addr: int, known: int) -> tuple[object, int, int]:
        """``(value or None, matched prefix length or -1, scope)`` for a client prefix."""
        if self.empty:
            return None, -1, 0
        node = self.root
        best, best_len = node.value, node.plen
        depth = 0
        bits = self.bits
        while True:
            if node.zero is None and node.one is None:
                # a leaf: every address below this node answers the same
                return best, best_len, depth
            if depth >= known:
                # the client told us no more bits: best answer for what we know
                return best, best_len, depth
            bit = (addr >> (bits - 1 - depth)) & 1
            nxt = node.one if bit else node.zero
            if nxt is None:
                # the other branch exists, ours does not: one more bit decides
                return best, best_len, depth + 1
            node = nxt
            depth += 1
            if node.plen >= 0:
                best, best_len = node.value, node.plen


@dataclass(frozen=True, eq=False)
class RegionMap:
    """Client prefix -> region by longest-prefix match, with a default region.

    Build with :meth:`build`. :meth:`lookup` returns ``(region, scope)``; ``region`` is
    None only when nothing matched and no default is set.
    """

    prefixes: tuple[tuple[Network, str], ...] = ()
    default: str | None = None
    _v4: _Trie = field(default_factory=lambda: _Trie(32), repr=False)
    _v6: _Trie = field(default_factory=lambda: _Trie(128), repr=False)

    @classmethod
    def build(cls, prefixes: Iterable[tuple[Network, str]], default: str | None = None) -> RegionMap:
        """A map from ``(network, region)`` pairs. The same prefix named twice keeps its
        first region (logged)."""
        items = tuple(prefixes)
        m = cls(items, default)
        for net, region in items:
            trie = m._v4 if net.version == 4 else m._v6
            if not trie.insert(int(net.network_address), net.prefixlen, region):
                log.warning("region map: prefix %s is listed twice; keeping its first region", net)
        return m

    @classmethod
    def from_regions(cls, regions: Mapping[str, object], default: str | None = None) -> RegionMap:
        """From herder's ``[regions.NAME] prefixes`` (:class:`herder.pool.model.Region`)."""
        pairs = [(p, name) for name, r in sorted(regions.items()) for p in getattr(r, "prefixes", ())]
        return cls.build(pairs, default)

    @property
    def regions(self) -> tuple[str, ...]:
        """Every region the map names, default included, sorted."""
        names = {r for _, r in self.prefixes}
        if self.default:
            names.add(self.default)
        return tuple(sorted(names))

    def lookup(self, client: ClientPrefix) -> tuple[str | None, int]:
        """``(region, scope)`` for a client prefix (see the module docstring)."""
        trie = self._v4 if client.family == 4 else self._v6
        value, plen, scope = trie.lookup(client.address, client.known_bits)
        if plen < 0:
            return self.default, scope
        return value, scope  # type: ignore[return-value]

    def match(self, client: ClientPrefix) -> str | None:
        """The region of the longest prefix containing ``client``; None when no prefix
        does (the default region is *not* applied)."""
        trie = self._v4 if client.family == 4 else self._v6
        value, plen, _ = trie.lookup(client.address, client.known_bits)
        return value if plen >= 0 else None  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class LatencyTable:
    """Measured latency (ms) from client prefixes to regions, for the latency policy."""

    rows: tuple[tuple[Network, Mapping[str, float]], ...] = ()
    _v4: _Trie = field(default_factory=lambda: _Trie(32), repr=False)
    _v6: _Trie = field(default_factory=lambda: _Trie(128), repr=False)

    @classmethod
    def build(cls, rows: Iterable[tuple[Network, Mapping[str, float]]]) -> LatencyTable:
        items = tuple(rows)
        t = cls(items)
        for i, (net, _) in enumerate(items):
            trie = t._v4 if net.version == 4 else t._v6
            trie.insert(int(net.network_address), net.prefixlen, i)
        return t

    def __bool__(self) -> bool:
        return bool(self.rows)

    def lookup(self, client: ClientPrefix) -> tuple[int | None, int]:
        """``(row index or None, scope)`` of the longest matching row."""
        trie = self._v4 if client.family == 4 else self._v6
        value, plen, scope = trie.lookup(client.address, client.known_bits)
        return (value if plen >= 0 else None), scope  # type: ignore[return-value]

    def order(self, row: int | None) -> tuple[str, ...]:
        """The regions of ``row`` nearest first (ties by name); () for no row."""
        if row is None:
            return ()
        lat = self.rows[row][1]
        return tuple(sorted(lat, key=lambda r: (lat[r], r)))


class MapFileError(ValueError):
    """A region map file line is malformed; the message names ``file:line``."""


def parse_map_text(text: str, filename: str = "<map>") -> RegionMap:
    """Parse a region map file: one ``PREFIX REGION`` per line, ``default REGION`` once,
    ``#`` comments and blank lines ignored::

        # prefix          region
        198.18.1.0/24     eu
        198.18.2.0/24     us
        2001:db8::/32     eu
        default           us
    """
    pairs: list[tuple[Network, str]] = []
    default = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise MapFileError(f"{filename}:{lineno}: expected 'PREFIX REGION' or 'default REGION', got {raw.strip()!r}")
        key, region = parts
        if key == "default":
            if default is not None:
                raise MapFileError(f"{filename}:{lineno}: second 'default' line")
            default = region
            continue
        try:
            net = ipaddress.ip_network(key, strict=False)
        except ValueError as e:
            raise MapFileError(f"{filename}:{lineno}: {e}") from None
        pairs.append((net, region))
    return RegionMap.build(pairs, default)
