"""Region maps: longest-prefix match, the default region, and an honest ECS scope."""

from __future__ import annotations

import ipaddress

import pytest

from herder.dns.geo import ClientPrefix, LatencyTable, MapFileError, RegionMap, parse_map_text

pytestmark = pytest.mark.unit


def rm(*pairs: tuple[str, str], default: str | None = None) -> RegionMap:
    return RegionMap.build(((ipaddress.ip_network(p), r) for p, r in pairs), default)


def look(m: RegionMap, client: str) -> tuple[str | None, int]:
    return m.lookup(ClientPrefix.from_text(client))


MAP = rm(("198.18.0.0/16", "eu"), ("198.18.7.0/24", "us"), ("198.19.0.0/16", "us"), ("2001:db8::/32", "eu"),
         default="ap")

CASES = [
    # (client, region, scope, why)
    ("198.18.1.7", "eu", 22, "inside the /16, but a nested /24 is near: the scope excludes it"),
    ("198.18.200.0/24", "eu", 17, "the /16's other half has no nested prefix"),
    ("198.18.7.9", "us", 24, "the nested, longer prefix wins"),
    ("198.18.7.0/24", "us", 24, "ECS /24 exactly the nested prefix"),
    ("198.19.44.0/24", "us", 16, "a leaf prefix: its length"),
    ("198.18.0.0/16", "eu", 16, "ECS shorter than the map needs: scope = the source length"),
    ("10.0.0.1", "ap", 1, "no match: default region, scope just clear of every prefix"),
    ("198.20.0.0/24", "ap", 14, "no match, but next to 198.18.0.0/15: 198.20.0.0/14 is clear"),
    ("2001:db8:5::/48", "eu", 32, "IPv6 leaf"),
    ("2001:db9::1", "ap", 32, "IPv6 miss next to the prefix"),
]


@pytest.mark.parametrize("client,region,scope,why", CASES, ids=[c[3] for c in CASES])
def test_lookup_and_scope(client, region, scope, why):
    assert look(MAP, client) == (region, scope)


def test_scope_never_claims_addresses_of_another_region():
    # For random clients, every address inside the returned scope must map to the same region.
    import random

    r = random.Random(3)
    for _ in range(300):
        addr = r.choice([0xC6120000, 0xC6130000, 0x0A000000, 0xC6140000]) | r.getrandbits(16)
        region, scope = MAP.lookup(ClientPrefix(4, addr, 32))
        block = ipaddress.ip_network((addr >> (32 - scope) << (32 - scope), scope)) if scope else None
        for probe in (block.network_address, block.broadcast_address) if block else ():
            assert MAP.lookup(ClientPrefix(4, int(probe), 32))[0] == region, (hex(addr), scope)


def test_empty_map_default_scope_zero():
    assert look(rm(default="eu"), "192.0.2.1") == ("eu", 0)
    assert look(rm(), "192.0.2.1") == (None, 0)


def test_match_ignores_the_default():
    assert MAP.match(ClientPrefix.from_text("10.0.0.1")) is None
    assert MAP.match(ClientPrefix.from_text("198.18.7.1")) == "us"


def test_map_file():
    m = parse_map_text("# prefix region\n198.18.1.0/24 eu\n198.18.2.0/24   us # trailing\n\ndefault us\n")
    assert look(m, "198.18.1.9") == ("eu", 24)
    assert m.default == "us" and m.regions == ("eu", "us")
    for bad, msg in [("198.18.1.0/24\n", ":1: expected"), ("x/24 eu\n", ":1: "),
                     ("default a\ndefault b\n", ":2: second 'default'")]:
        with pytest.raises(MapFileError, match=msg):
            parse_map_text(bad, "f.map")


def test_latency_order():
    t = LatencyTable.build([(ipaddress.ip_network("198.18.3.0/24"), {"eu": 40.0, "us": 150.0, "ap": 40.0})])
    row, scope = t.lookup(ClientPrefix.from_text("198.18.3.9"))
    assert t.order(row) == ("ap", "eu", "us") and scope == 24
    assert t.lookup(ClientPrefix.from_text("10.0.0.1"))[0] is None
    assert t.order(None) == ()
