"""The answer function, table-driven: (query, client, view) -> what dig would show.

Every case goes through the real codec: dnspython builds the query, herder parses it,
answers it and encodes the response, dnspython decodes it. The view comes from a herder
config (the same one a user writes) and a pool state in which tests mark servers down.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import pytest

from herder.config.load import load_strings
from herder.dns.answer import View, answer, answer_set, classify, client_prefix
from herder.dns.config import make_view
from herder.dns.wire import encode_response, parse_query
from herder.pool.model import Health, HealthState
from herder.pool.state import PoolState

pytestmark = pytest.mark.unit

CONFIG = r'''
[regions.eu]
prefixes = ["198.18.1.0/24", "2001:db8:1::/48"]
[regions.us]
prefixes = ["198.18.2.0/24"]
[regions.ap]
prefixes = ["198.18.3.0/24"]

[pools.web]
servers = [
  { name = "eu1", address = "198.18.1.11:80", region = "eu" },
  { name = "eu2", address = "198.18.1.12:80", region = "eu" },
  { name = "us1", address = "198.18.2.11:80", region = "us" },
  { name = "eu6", address = "[2001:db8:1::11]:80", region = "eu" },
]
[pools.weighted]
servers = [
  { name = "a", address = "192.0.2.1:80", weight = 3 },
  { name = "b", address = "192.0.2.2:80", weight = 1 },
]
[pools.fo]
servers = [
  { name = "p1", address = "192.0.2.11:80" },
  { name = "s1", address = "192.0.2.21:80", backup = true },
]
[pools.dr]
servers = [{ name = "d1", address = "192.0.2.31:80" }]
[pools.lat]
servers = [
  { name = "eu", address = "198.18.1.21:80", region = "eu" },
  { name = "us", address = "198.18.2.21:80", region = "us" },
]
[pools.named]
servers = [
  { name = "byname", address = "backend.local:80" },
  { name = "byip", address = "192.0.2.41:80" },
]

[dns]
listen = "127.0.0.1:53"
default_region = "us"

[dns.zones."example.com"]
ttl = 300
records = [
  "@ NS ns1",
  "ns1 A 192.0.2.53",
  "www CNAME www.example.com.edgekey.test.",
  "static A 192.0.2.80",
  "static AAAA 2001:db8::80",
  "txt TXT \"hello world\"",
  "mx MX 10 mail",
  "mail A 192.0.2.25",
  "_http._tcp SRV 0 5 80 static",
  "sub NS ns.sub",
  "ns.sub A 192.0.2.99",
  "*.wild TXT wildcard",
  "deep.ent A 192.0.2.7",
  "loop1 CNAME loop2",
  "loop2 CNAME loop1",
  "out CNAME www.elsewhere.org.",
  "named.example.com. TXT static-data",
]
[dns.zones."edgekey.test"]
records = ["www.example.com 600 CNAME e1.dscj.edge.test."]
[dns.zones."edge.test"]
records = ["@ NS ns1", "ns1 A 192.0.2.53"]
[dns.zones."dscj.edge.test"]
records = ["@ NS ns1.edge.test."]
[dns.zones."cdn.test"]
records = ["@ NS ns1.edge.test."]

[dns.names."e1.dscj.edge.test"]
pool = "web"
policy = "multivalue"
ttl = 30
[dns.names."weighted.example.com"]
pool = "weighted"
policy = "weighted"
[dns.names."failover.example.com"]
pool = "fo"
policy = "failover"
[dns.names."failover2.example.com"]
pool = "fo"
policy = "failover"
secondary = "dr"
[dns.names."multi.example.com"]
pool = "web"
policy = "multivalue"
max_answers = 1
[dns.names."geo.example.com"]
pool = "web"
policy = "geolocation"
[dns.names."lat.example.com"]
pool = "lat"
policy = "latency"
[dns.names."sorry.example.com"]
pool = "fo"
fallback = "sorry"
sorry = ["192.0.2.200"]
[dns.names."sorrycname.example.com"]
pool = "dr"
fallback = "sorry"
sorry = "sorry.example.org"
[dns.names."named.example.com"]
pool = "named"
[dns.names."img.cdn.test"]
pool = "web"

[dns.maps."dscj.edge.test"]
ttl = 20
[dns.maps."dscj.edge.test".regions.ap]
name_servers = { "ns1.ap.edge.test" = "198.18.3.53" }
[dns.maps."cdn.test"]
mode = "cname"
ttl = 15
[dns.maps."cdn.test".regions.ap]
name_servers = { "ns1.ap.cdn.test" = ["198.18.3.54", "2001:db8:3::54"] }

[dns.latency]
"198.18.3.0/24" = { eu = 40, us = 150 }
"198.18.1.0/24" = { eu = 5, us = 90 }
'''


def build(config: str = CONFIG) -> tuple[PoolState, View]:
    cfg = load_strings([("dns.toml", config)])
    state = PoolState()
    state.load(cfg.pools.values(), cfg.services.values(), cfg.regions.values())
    return state, make_view(cfg.section("dns"), cfg.regions)


STATE, BASE = build()


def view_with(down: set[tuple[str, str]] = frozenset()) -> View:
    state, base = build()
    for pool, server in down:
        state.set_health(pool, server, Health(HealthState.DOWN, "test"))
    return base.with_snapshot(state.snapshot)


def ask(view: View, name: str, rdtype: str = "A", *, ecs: str | None = None, source: str = "192.0.2.1",
        rng: random.Random | None = None, edns: int | None = 0, opcode: int | None = None,
        rdclass: str = "IN") -> dns.message.Message:
    options = []
    if ecs:
        addr, plen = ecs.split("/")
        options.append(dns.edns.ECSOption(addr, int(plen)))
    m = dns.message.make_query(name, rdtype, rdclass=rdclass, use_edns=edns, options=options)
    if opcode is not None:
        m.set_opcode(opcode)
    q = parse_query(m.to_wire())
    prefix, _ = client_prefix(q, source, view)
    resp = answer(q, prefix, view, rng=rng)
    return dns.message.from_wire(encode_response(q, resp))


def lines(section) -> list[str]:
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


def scope(m: dns.message.Message) -> int | None:
    for o in m.options:
        if isinstance(o, dns.edns.ECSOption):
            return o.scopelen
    return None


@dataclass
class Case:
    desc: str
    name: str
    rdtype: str = "A"
    ecs: str | None = None
    rcode: str = "NOERROR"
    answer: list[str] = field(default_factory=list)
    authority: list[str] = field(default_factory=list)
    additional: list[str] = field(default_factory=list)
    aa: bool = True
    scope: int | None = None
    down: frozenset = frozenset()
    source: str = "192.0.2.1"


SOA = "example.com. 60 IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 60"
CHAIN = ["www.example.com. 300 IN CNAME www.example.com.edgekey.test.",
         "www.example.com.edgekey.test. 600 IN CNAME e1.dscj.edge.test."]
EU = ["e1.dscj.edge.test. 30 IN A 198.18.1.11", "e1.dscj.edge.test. 30 IN A 198.18.1.12"]

CASES = [
    # --- zones
    Case("static A keeps the query's case", "STATIC.Example.COM", answer=["STATIC.Example.COM. 300 IN A 192.0.2.80"]),
    Case("static AAAA", "static.example.com", "AAAA", answer=["static.example.com. 300 IN AAAA 2001:db8::80"]),
    Case("TXT", "txt.example.com", "TXT", answer=['txt.example.com. 300 IN TXT "hello world"']),
    Case("NODATA carries the SOA at the negative TTL", "static.example.com", "MX", authority=[SOA]),
    Case("NXDOMAIN carries the SOA", "nope.example.com", rcode="NXDOMAIN", authority=[SOA]),
    Case("empty non-terminal is NODATA", "ent.example.com", authority=[SOA]),
    Case("wildcard synthesis", "Foo.wild.example.com", "TXT", answer=['Foo.wild.example.com. 300 IN TXT "wildcard"']),
    Case("delegation: referral with glue, not authoritative", "x.sub.example.com", aa=False,
         authority=["sub.example.com. 300 IN NS ns.sub.example.com."],
         additional=["ns.sub.example.com. 300 IN A 192.0.2.99"]),
    Case("MX with the exchange's address", "mx.example.com", "MX", answer=["mx.example.com. 300 IN MX 10 mail.example.com."],
         additional=["mail.example.com. 300 IN A 192.0.2.25"]),
    Case("SRV with the target's addresses", "_http._tcp.example.com", "SRV",
         answer=["_http._tcp.example.com. 300 IN SRV 0 5 80 static.example.com."],
         additional=["static.example.com. 300 IN A 192.0.2.80", "static.example.com. 300 IN AAAA 2001:db8::80"]),
    Case("apex NS with glue", "example.com", "NS", answer=["example.com. 300 IN NS ns1.example.com."],
         additional=["ns1.example.com. 300 IN A 192.0.2.53"]),
    Case("outside our zones: REFUSED", "www.elsewhere.org", rcode="REFUSED", aa=False),
    Case("CNAME leaving our zones stops there", "out.example.com",
         answer=["out.example.com. 300 IN CNAME www.elsewhere.org."]),
    Case("CNAME loop stops", "loop1.example.com", answer=["loop1.example.com. 300 IN CNAME loop2.example.com.",
                                                          "loop2.example.com. 300 IN CNAME loop1.example.com."]),
    # --- the lecture's chain through the two-level hierarchy (delegate mode, regions local)
    Case("chain for an eu client: CNAME, CNAME, A of eu servers", "www.example.com", ecs="198.18.1.0/24",
         answer=CHAIN + EU, scope=24),
    Case("chain for a us client: same CNAMEs, us server", "www.example.com", ecs="198.18.2.0/24",
         answer=CHAIN + ["e1.dscj.edge.test. 30 IN A 198.18.2.11"], scope=24),
    Case("unmapped client: default region, scope just wide enough", "www.example.com", ecs="10.1.0.0/16",
         answer=CHAIN + ["e1.dscj.edge.test. 30 IN A 198.18.2.11"], scope=1),
    Case("mapped by source address without ECS", "www.example.com", source="198.18.1.77", answer=CHAIN + EU),
    Case("eu down: the mapping level sends eu clients to the next region", "www.example.com", ecs="198.18.1.0/24",
         down=frozenset({("web", "eu1"), ("web", "eu2"), ("web", "eu6")}),
         answer=CHAIN + ["e1.dscj.edge.test. 30 IN A 198.18.2.11"], scope=24),
    Case("a region served elsewhere: referral after the chain", "www.example.com", ecs="198.18.3.0/24",
         answer=CHAIN, authority=["dscj.edge.test. 20 IN NS ns1.ap.edge.test."],
         additional=["ns1.ap.edge.test. 20 IN A 198.18.3.53"], scope=24),
    Case("a region served elsewhere: direct query is a referral", "e1.dscj.edge.test", ecs="198.18.3.0/24", aa=False,
         authority=["dscj.edge.test. 20 IN NS ns1.ap.edge.test."],
         additional=["ns1.ap.edge.test. 20 IN A 198.18.3.53"], scope=24),
    Case("regional AAAA", "e1.dscj.edge.test", "AAAA", ecs="198.18.1.0/24",
         answer=["e1.dscj.edge.test. 30 IN AAAA 2001:db8:1::11"], scope=24),
    Case("zone apex of the mapped domain", "dscj.edge.test", "NS", ecs="198.18.1.0/24",
         answer=["dscj.edge.test. 3600 IN NS ns1.edge.test."], additional=["ns1.edge.test. 3600 IN A 192.0.2.53"],
         scope=24),
    # --- cname mode
    Case("cname mode: mapping CNAME into the region, then its servers", "img.cdn.test", ecs="198.18.1.0/24",
         answer=["img.cdn.test. 15 IN CNAME img.eu.cdn.test.", "img.eu.cdn.test. 20 IN A 198.18.1.11",
                 "img.eu.cdn.test. 20 IN A 198.18.1.12"], scope=24),
    Case("cname mode: a region name directly, client-independent", "img.us.cdn.test", ecs="198.18.1.0/24",
         answer=["img.us.cdn.test. 20 IN A 198.18.2.11"], scope=0),
    Case("cname mode: a region served elsewhere", "img.ap.cdn.test", aa=False,
         authority=["ap.cdn.test. 15 IN NS ns1.ap.cdn.test."],
         additional=["ns1.ap.cdn.test. 15 IN A 198.18.3.54", "ns1.ap.cdn.test. 15 IN AAAA 2001:db8:3::54"]),
    # --- policies
    Case("failover: primary", "failover.example.com", answer=["failover.example.com. 20 IN A 192.0.2.11"]),
    Case("failover: backup when the primary is down", "failover.example.com", down=frozenset({("fo", "p1")}),
         answer=["failover.example.com. 20 IN A 192.0.2.21"]),
    Case("failover: secondary pool with the backup", "failover2.example.com", down=frozenset({("fo", "p1")}),
         answer=["failover2.example.com. 20 IN A 192.0.2.21", "failover2.example.com. 20 IN A 192.0.2.31"]),
    Case("geolocation: eu client", "geo.example.com", ecs="198.18.1.0/24", scope=24,
         answer=["geo.example.com. 20 IN A 198.18.1.11", "geo.example.com. 20 IN A 198.18.1.12"]),
    Case("geolocation: a region without servers gets the default region", "geo.example.com", ecs="198.18.3.0/24",
         scope=24, answer=["geo.example.com. 20 IN A 198.18.2.11"]),
    Case("latency: nearest region with a server", "lat.example.com", ecs="198.18.3.0/24", scope=24,
         answer=["lat.example.com. 20 IN A 198.18.1.21"]),
    Case("latency: nearest is down, next nearest", "lat.example.com", ecs="198.18.3.0/24", scope=24,
         down=frozenset({("lat", "eu")}), answer=["lat.example.com. 20 IN A 198.18.2.21"]),
    Case("down servers disappear", "geo.example.com", ecs="198.18.1.0/24", scope=24, down=frozenset({("web", "eu1")}),
         answer=["geo.example.com. 20 IN A 198.18.1.12"]),
    Case("all down, fallback all: answer them anyway", "failover.example.com",
         down=frozenset({("fo", "p1"), ("fo", "s1")}), answer=["failover.example.com. 20 IN A 192.0.2.11"]),
    Case("all down, fallback sorry: the sorry record", "sorry.example.com",
         down=frozenset({("fo", "p1"), ("fo", "s1")}), answer=["sorry.example.com. 20 IN A 192.0.2.200"]),
    Case("all down, sorry host name: a CNAME out", "sorrycname.example.com", down=frozenset({("dr", "d1")}),
         answer=["sorrycname.example.com. 20 IN CNAME sorry.example.org."]),
    Case("policy name without addresses of the family: NODATA", "weighted.example.com", "AAAA", authority=[SOA]),
    Case("policy name keeps its static data for other types", "named.example.com", "TXT",
         answer=['named.example.com. 300 IN TXT "static-data"']),
    Case("servers given by host name are not answers", "named.example.com",
         answer=["named.example.com. 20 IN A 192.0.2.41"]),
    # --- codes
    Case("zone transfer refused", "example.com", "AXFR", rcode="REFUSED", aa=False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_answer(case: Case):
    view = view_with(case.down)
    m = ask(view, case.name, case.rdtype, ecs=case.ecs, source=case.source)
    assert dns.rcode.to_text(m.rcode()) == case.rcode
    assert bool(m.flags & dns.flags.AA) is case.aa
    assert lines(m.answer) == sorted(case.answer)
    assert lines(m.authority) == sorted(case.authority)
    assert lines(m.additional) == sorted(case.additional)
    assert scope(m) == case.scope


def test_notimp_for_other_opcodes():
    m = ask(BASE, "example.com", "SOA", opcode=dns.opcode.NOTIFY)
    assert m.rcode() == dns.rcode.NOTIMP and not m.question


def test_badvers_for_edns_version_1():
    assert ask(BASE, "static.example.com", edns=1).rcode() == dns.rcode.BADVERS


def test_refused_for_other_classes():
    assert ask(BASE, "static.example.com", rdclass="CH").rcode() == dns.rcode.REFUSED


def test_ecs_off_is_not_echoed_and_not_used():
    off = replace(BASE.with_snapshot(STATE.snapshot), ecs=False)
    m = ask(off, "geo.example.com", ecs="198.18.1.0/24", source="198.18.2.5")
    assert scope(m) is None
    assert lines(m.answer) == ["geo.example.com. 20 IN A 198.18.2.11"]


def test_ecs_source_zero_uses_the_packet_source_with_scope_zero():
    view = BASE.with_snapshot(STATE.snapshot)
    m = ask(view, "geo.example.com", ecs="0.0.0.0/0", source="198.18.1.5")
    assert lines(m.answer) == ["geo.example.com. 20 IN A 198.18.1.11", "geo.example.com. 20 IN A 198.18.1.12"]


def test_weighted_variants_follow_the_weights():
    view = BASE.with_snapshot(STATE.snapshot)
    q = parse_query(dns.message.make_query("weighted.example.com", "A").to_wire())
    aset = answer_set(q, classify(view, None), view)
    picks = {tuple(r.answer[0].rdatas): w for r, w in zip(aset.variants, aset.weights, strict=True)}
    assert picks == {((b"\xc0\x00\x02\x01",),): 3.0, ((b"\xc0\x00\x02\x02",),): 1.0}
    rng = random.Random(7)
    counts = Counter(ask(view, "weighted.example.com", rng=rng).answer[0][0].address for _ in range(4000))
    assert abs(counts["192.0.2.1"] / 4000 - 0.75) < 0.03


def test_multivalue_rotates_every_server_equally():
    view = BASE.with_snapshot(STATE.snapshot)
    q = parse_query(dns.message.make_query("multi.example.com", "A").to_wire())
    aset = answer_set(q, classify(view, None), view)
    firsts = Counter(r.answer[0].rdatas[0] for r in aset.variants)
    assert len(aset.variants) == 3 and len(firsts) == 3  # max_answers = 1: one server per variant
    assert all(len(r.answer[0].rdatas) == 1 for r in aset.variants)


def test_answer_depends_on_client_only_where_it_must():
    view = BASE.with_snapshot(STATE.snapshot)

    def dependent(name):
        q = parse_query(dns.message.make_query(name, "A").to_wire())
        return answer_set(q, classify(view, None), view).client_dependent

    assert dependent("www.example.com") and dependent("geo.example.com") and dependent("img.cdn.test")
    assert not dependent("static.example.com") and not dependent("weighted.example.com")
    assert not dependent("img.us.cdn.test")


def test_a_regional_level_answers_for_its_region_whatever_the_client():
    regional = CONFIG.replace('[dns.maps."dscj.edge.test"]\nttl = 20\n',
                              '[dns.maps."dscj.edge.test"]\nrole = "region"\nregion = "us"\n')
    state, base = build(regional)
    view = base.with_snapshot(state.snapshot)
    m = ask(view, "e1.dscj.edge.test", ecs="198.18.1.0/24")
    assert lines(m.answer) == ["e1.dscj.edge.test. 30 IN A 198.18.2.11"]
    assert scope(m) == 0  # the answer does not depend on the client here
