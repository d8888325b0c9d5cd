"""DNS discovery without a network: answers to records, TTLs, and stable server-template names."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from herder.config.load import load_text
from herder.discovery.dns import Empty, ResolveError, SlotNames, negative_ttl, records_from
from herder.pool.model import Endpoint

pytestmark = pytest.mark.unit


def answer(qname: str, qtype: str, *rrsets, rcode=dns.rcode.NOERROR, additional=(), authority=()):
    q = dns.message.make_query(qname, qtype)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    r.answer.extend(rrsets)
    r.additional.extend(additional)
    r.authority.extend(authority)
    return r


def rr(name: str, ttl: int, rdtype: str, *texts: str):
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *texts)


def test_a_records():
    msg = answer("api.example.test", "A", rr("api.example.test.", 30, "A", "192.0.2.1", "192.0.2.2"))
    recs, ttl, missing = records_from(msg, dns.rdatatype.A, 8080, 2)
    assert sorted((r.address for r in recs), key=str) == [Endpoint("192.0.2.1", 8080), Endpoint("192.0.2.2", 8080)]
    assert {r.weight for r in recs} == {2} and ttl == 30 and missing == []


def test_cname_ttl_counts():
    msg = answer("api.example.test", "A", rr("api.example.test.", 5, "CNAME", "real.example.test."),
                 rr("real.example.test.", 60, "A", "192.0.2.1"))
    _, ttl, _ = records_from(msg, dns.rdatatype.A, 80, 1)
    assert ttl == 5


def test_srv_with_additional_addresses():
    msg = answer("_http._tcp.example.test", "SRV",
                 rr("_http._tcp.example.test.", 60, "SRV", "10 5 8081 a.example.test.", "10 0 8082 b.example.test.",
                    "20 1 8083 c.example.test.", "0 0 0 ."),
                 additional=[rr("a.example.test.", 20, "A", "192.0.2.1"), rr("b.example.test.", 60, "AAAA", "2001:db8::2")])
    recs, ttl, missing = records_from(msg, dns.rdatatype.SRV, None, 1)
    by_target = {r.target: r for r in recs}
    assert by_target["a.example.test."].address == Endpoint("192.0.2.1", 8081)
    assert by_target["a.example.test."].weight == 5
    assert by_target["b.example.test."].address == Endpoint("2001:db8::2", 8082)
    assert by_target["b.example.test."].weight == 1  # SRV weight 0 -> 1: herder's 0 means "no traffic"
    assert by_target["c.example.test."].priority == 20
    assert missing == ["c.example.test."]  # no address in the additional section: resolved separately
    assert "." not in by_target
    assert ttl == 20


def test_nxdomain_and_nodata_are_empty_with_negative_ttl():
    soa = rr("example.test.", 300, "SOA", "ns.example.test. admin.example.test. 1 60 60 600 15")
    with pytest.raises(Empty) as e:
        records_from(answer("x.example.test", "A", rcode=dns.rcode.NXDOMAIN, authority=[soa]), dns.rdatatype.A, 80, 1)
    assert e.value.ttl == 15
    with pytest.raises(Empty):
        records_from(answer("x.example.test", "A"), dns.rdatatype.A, 80, 1)
    assert negative_ttl(answer("x.example.test", "A")) is None


def test_servfail_is_an_error():
    with pytest.raises(ResolveError):
        records_from(answer("x.example.test", "A", rcode=dns.rcode.SERVFAIL), dns.rdatatype.A, 80, 1)


def test_slot_names_are_stable():
    names = SlotNames("web")
    a, b, c, d = ("10.0.0.1",), ("10.0.0.2",), ("10.0.0.3",), ("10.0.0.4",)
    n1, _ = names.assign([b, a])
    assert n1 == {a: "web1", b: "web2"}
    n2, _ = names.assign([b, c])  # a leaves: b keeps web2, c takes the free web1
    assert n2 == {b: "web2", c: "web1"}
    n3, _ = names.assign([b, c, d, a])
    assert n3[b] == "web2" and n3[c] == "web1" and {n3[a], n3[d]} == {"web3", "web4"}


def test_slot_names_respect_count():
    names = SlotNames("srv", count=2)
    got, dropped = names.assign([("a",), ("b",), ("c",)])
    assert sorted(got.values()) == ["srv1", "srv2"] and dropped == [("c",)]


CFG = """\
[pools.web]
[[pools.web.discovery]]
type = "dns"
name = "{name}"
{extra}
"""


@pytest.mark.parametrize("name,extra,qtype", [
    ("_http._tcp.example.test", "", "SRV"),
    ("api.example.test", "port = 80", "A"),
    ("api.example.test", 'qtype = "aaaa"\nport = 80\nresolver = ["127.0.0.1:5353", "::1"]', "AAAA"),
])
def test_config_defaults(name, extra, qtype):
    frag = load_text("t.toml", CFG.format(name=name, extra=extra))
    assert frag.ctx.errors == []
    spec = frag.pools["web"].settings["discovery"][0]
    assert spec["qtype"] == qtype and spec["prefix"] == "srv" and spec["hold_nx"] == 30.0
    if "resolver" in extra:
        assert [str(e) for e in spec["resolver"]] == ["127.0.0.1:5353", "[::1]:53"]


@pytest.mark.parametrize("extra,expected", [
    ("", "t.toml:2: pools.web.discovery[0]: missing required key 'port' (A records carry no port"),
    ('port = 80\nttl_min = "10s"\nttl_max = "5s"', "t.toml:6: pools.web.discovery[0].ttl_min: ttl_min (10s) is above"),
    ('port = 80\nresolver = "nope:x"', "t.toml:6: pools.web.discovery[0].resolver[0]: expected an address"),
])
def test_config_errors(extra, expected):
    frag = load_text("t.toml", CFG.format(name="api.example.test", extra=extra))
    errors = [str(e) for e in frag.ctx.errors]
    assert any(e.startswith(expected) for e in errors), errors


def test_unknown_discovery_type():
    frag = load_text("t.toml", '[pools.web]\n[[pools.web.discovery]]\ntype = "etcd"\n')
    assert [str(e) for e in frag.ctx.errors] == [
        "t.toml:3: pools.web.discovery[0].type: unknown discovery type string 'etcd'; expected one of: dns, file"]
