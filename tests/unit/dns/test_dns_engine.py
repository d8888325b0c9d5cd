"""The server's engine without sockets: the wire-answer cache and its invalidation."""

from __future__ import annotations

from collections import Counter

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from herder.config.load import load_strings
from herder.dns.config import make_view
from herder.dns.server import DnsEngine
from herder.pool.model import Health, HealthState
from herder.pool.state import PoolState

pytestmark = pytest.mark.unit

CONFIG = """\
[regions.eu]
prefixes = ["198.18.1.0/24"]
[regions.us]
prefixes = ["198.18.2.0/24"]
[pools.web]
servers = [
  { name = "eu1", address = "198.18.1.11:80", region = "eu" },
  { name = "us1", address = "198.18.2.11:80", region = "us" },
]
[pools.w]
servers = [{ name = "a", address = "192.0.2.1:80", weight = 1 }, { name = "b", address = "192.0.2.2:80", weight = 1 }]
[dns]
listen = "127.0.0.1:5300"
default_region = "us"
[dns.zones."example.com"]
records = ["static A 192.0.2.80"]
[dns.names."geo.example.com"]
pool = "web"
policy = "geolocation"
[dns.names."w.example.com"]
pool = "w"
policy = "weighted"
"""
#: A zone whose A RRset (80 records, ~1.3 kB) does not fit a 1232-octet UDP answer.
BIG = '[dns.zones."big.example.com"]\nrecords = [' + ", ".join(f'"@ A 10.0.0.{j}"' for j in range(80)) + "]\n"


@pytest.fixture
def setup():
    cfg = load_strings([("t.toml", CONFIG + BIG)])
    state = PoolState()
    state.load(cfg.pools.values(), cfg.services.values(), cfg.regions.values())
    base = make_view(cfg.section("dns"), cfg.regions)
    engine = DnsEngine(base.with_snapshot(state.snapshot), payload=1232, cache_entries=1000)
    return state, base, engine


def query(name, rdtype="A", ecs=None, **kw) -> dns.message.Message:
    opts = [dns.edns.ECSOption(*ecs)] if ecs else []
    return dns.message.make_query(name, rdtype, options=opts, use_edns=0 if ecs else kw.pop("use_edns", None), **kw)


def udp(engine, m, source="192.0.2.9") -> dns.message.Message:
    out = engine.udp(m.to_wire(), source)
    return dns.message.from_wire(out)


def addrs(m) -> list[str]:
    return sorted(r.address for rr in m.answer for r in rr)


def test_cached_answer_carries_each_query_id(setup):
    _, _, engine = setup
    m1, m2 = query("static.example.com"), query("static.example.com")
    r1, r2 = udp(engine, m1), udp(engine, m2)
    assert (r1.id, r2.id) == (m1.id, m2.id) and addrs(r2) == ["192.0.2.80"]
    assert engine.stats["misses"] == 1


def test_source_dependent_answers_are_cached_per_region(setup):
    _, _, engine = setup
    m = query("geo.example.com")
    assert addrs(udp(engine, m, "198.18.1.5")) == ["198.18.1.11"]
    assert addrs(udp(engine, m, "198.18.2.5")) == ["198.18.2.11"]
    assert addrs(udp(engine, m, "198.18.1.6")) == ["198.18.1.11"]  # same class, cached
    assert engine.stats["misses"] == 2


def test_ecs_answers_are_cached_by_the_option(setup):
    _, _, engine = setup
    eu = query("geo.example.com", ecs=("198.18.1.0", 24))
    us = query("geo.example.com", ecs=("198.18.2.0", 24))
    for _ in range(3):
        assert addrs(udp(engine, eu, "10.0.0.1")) == ["198.18.1.11"]
        assert addrs(udp(engine, us, "10.0.0.1")) == ["198.18.2.11"]
    assert engine.stats["misses"] == 2


def test_a_new_snapshot_invalidates_the_cache(setup):
    state, base, engine = setup
    m = query("geo.example.com", ecs=("198.18.1.0", 24))
    assert addrs(udp(engine, m)) == ["198.18.1.11"]
    state.set_health("web", "eu1", Health(HealthState.DOWN, "test"))
    engine.set_view(base.with_snapshot(state.snapshot))
    assert addrs(udp(engine, m)) == ["198.18.2.11"]


def test_weighted_variants_are_all_cached_and_picked_at_random(setup):
    _, _, engine = setup
    m = query("w.example.com")
    counts = Counter(addrs(udp(engine, m))[0] for _ in range(2000))
    assert engine.stats["misses"] == 1
    assert abs(counts["192.0.2.1"] - 1000) < 150


def test_udp_truncates_tcp_does_not(setup):
    _, _, engine = setup
    m = query("big.example.com", use_edns=0, payload=1232)
    r = udp(engine, m)
    assert r.flags & dns.flags.TC and not r.answer
    r = dns.message.from_wire(engine.tcp(m.to_wire(), "192.0.2.9"))
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 80
    plain = dns.message.make_query("static.example.com", "A")  # no EDNS: 512 octets is enough here
    assert not udp(engine, plain).flags & dns.flags.TC


def test_malformed_get_formerr_or_nothing(setup):
    _, _, engine = setup
    assert engine.udp(b"\x00\x01", "192.0.2.9") is None
    bad = dns.message.make_query("static.example.com", "A").to_wire() + b"junk"
    r = dns.message.from_wire(engine.udp(bad, "192.0.2.9"))
    assert r.rcode() == dns.rcode.FORMERR
    assert engine.stats["formerr"] == 1 and engine.stats["dropped"] == 1
    assert addrs(udp(engine, query("static.example.com"))) == ["192.0.2.80"]


def test_cache_is_bounded(setup):
    _, _, engine = setup
    for i in range(2500):
        engine.udp(query(f"n{i}.example.com").to_wire(), "192.0.2.9")
    assert len(engine.cache) <= engine.cache_entries
