"""The hand-written codec against dnspython: queries it builds, responses it reads.

Malformed input is table-driven (description, bytes, whether a FORMERR reply is due),
with the bytes built by hand so each case shows the one thing that is wrong.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from herder.dns.wire import (
    CompName,
    Ecs,
    Edns,
    FormErr,
    Opcode,
    Query,
    Rcode,
    Response,
    RRset,
    RType,
    encode_error,
    encode_response,
    is_subdomain,
    name_from_text,
    name_to_text,
    parse_query,
    split_labels,
)

pytestmark = pytest.mark.unit


def make(name: str, rdtype: str = "A", **kw) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


def ecs_query(name: str, addr: str, srclen: int, **kw) -> bytes:
    opt = dns.edns.ECSOption(addr, srclen)
    return make(name, use_edns=0, options=[opt], **kw)


# --------------------------------------------------------------------------- parsing good queries


@pytest.mark.parametrize("name", ["www.example.com", "WwW.ExAmPlE.CoM", "a.b.c.d.e.f.g", ".", "x" * 63 + ".test",
                                  "under_score.example", "*.wild.example"])
@pytest.mark.parametrize("rdtype", ["A", "AAAA", "MX", "TXT", "ANY", "SRV", "CAA"])
def test_parses_what_dnspython_builds(name, rdtype):
    m = dns.message.make_query(name, rdtype)
    q = parse_query(m.to_wire())
    assert q.msg_id == m.id
    assert q.qname == dns.name.from_text(name).to_wire()  # case kept
    assert q.qkey == q.qname.lower()
    assert q.qtype == dns.rdatatype.from_text(rdtype)
    assert q.qclass == 1
    assert q.opcode == Opcode.QUERY
    assert q.edns is None


def test_edns_payload_version_and_do_bit():
    q = parse_query(make("example.com", use_edns=0, payload=4096, want_dnssec=True))
    assert q.edns == Edns(udp_payload=4096, version=0, dnssec_ok=True, ecs=None)
    q = parse_query(make("example.com", use_edns=0, payload=100))
    assert q.edns.udp_payload == 512  # RFC 6891 6.2.5
    q = parse_query(make("example.com", use_edns=1))
    assert q.edns.version == 1


@pytest.mark.parametrize("addr,srclen,family,raw", [
    ("198.18.1.0", 24, 1, b"\xc6\x12\x01"),
    ("198.18.1.77", 32, 1, b"\xc6\x12\x01\x4d"),
    ("198.18.0.0", 15, 1, b"\xc6\x12"),
    ("0.0.0.0", 0, 1, b""),
    ("2001:db8::", 32, 2, b"\x20\x01\x0d\xb8"),
    ("2001:db8:1:200::", 56, 2, b"\x20\x01\x0d\xb8\x00\x01\x02"),
])
def test_client_subnet_option(addr, srclen, family, raw):
    q = parse_query(ecs_query("www.example.com", addr, srclen))
    assert q.edns.ecs == Ecs(family, srclen, 0, raw)
    assert q.edns.ecs.text() == f"{addr}/{srclen}"


def test_other_edns_options_are_ignored():
    cookie = dns.edns.GenericOption(10, b"\x01" * 8)
    q = parse_query(make("example.com", use_edns=0, options=[cookie, dns.edns.ECSOption("198.18.1.0", 24)]))
    assert q.edns.ecs.source_len == 24


def test_other_opcodes_are_returned_without_a_question():
    m = dns.message.make_query("example.com", "SOA")
    m.set_opcode(dns.opcode.NOTIFY)
    q = parse_query(m.to_wire())
    assert q.opcode == Opcode.NOTIFY and q.qname == b""


def test_compression_pointer_backwards_into_the_question_is_followed():
    # An answer-section record whose owner points at the question name (legal, if odd).
    head = struct.pack("!HHHHHH", 7, 0, 1, 1, 0, 0)
    qname = b"\x03www\x07example\x03com\x00"
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04"
    q = parse_query(head + qname + b"\x00\x01\x00\x01" + rr)
    assert q.qname == qname


# --------------------------------------------------------------------------- malformed queries


def hdr(qd=1, an=0, ns=0, ar=0, flags=0, msg_id=0x1234) -> bytes:
    return struct.pack("!HHHHHH", msg_id, flags, qd, an, ns, ar)


Q = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"


def opt(rdata: bytes = b"", name: bytes = b"\x00", payload=1232, ttl=0) -> bytes:
    return name + struct.pack("!HHIH", 41, payload, ttl, len(rdata)) + rdata


def ecs_opt(family=1, src=24, scope=0, addr=b"\xc6\x12\x01", length=None) -> bytes:
    body = struct.pack("!HBB", family, src, scope) + addr
    return struct.pack("!HH", 8, len(body) if length is None else length) + body


MALFORMED = [
    # (description, message, reply expected)
    ("empty datagram", b"", False),
    ("shorter than a header", b"\x12\x34\x00", False),
    ("a response, not a query", hdr(flags=0x8000) + Q, False),
    ("no question", hdr(qd=0), True),
    ("two questions", hdr(qd=2) + Q + Q, True),
    ("question cut in the name", hdr() + b"\x03www\x07exa", True),
    ("question without type and class", hdr() + b"\x03www\x00", True),
    ("question with half a type", hdr() + b"\x03www\x00\x00", True),
    ("pointer to itself", hdr() + b"\xc0\x0c\x00\x01\x00\x01", True),
    ("pointer forwards", hdr() + b"\xc0\x20" + b"\x00" * 40, True),
    ("pointer loop between two names", hdr(an=1) + b"\x01a\xc0\x1b\x00\x01\x00\x01" + b"\x01b\xc0\x0c"
     + struct.pack("!HHIH", 1, 1, 0, 0), True),
    ("truncated pointer", hdr() + b"\x01a\xc0", True),
    ("label type 0x40 (extended)", hdr() + b"\x41a\x00\x00\x01\x00\x01", True),
    ("label type 0x80 (reserved)", hdr() + b"\x81a\x00\x00\x01\x00\x01", True),
    ("name longer than 255 octets", hdr() + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63
     + b"\x3f" + b"d" * 63 + b"\x00\x00\x01\x00\x01", True),
    ("label runs past the end", hdr() + b"\x10abc", True),
    ("octets after the last record", hdr() + Q + b"\x00", True),
    ("additional record missing", hdr(ar=1) + Q, True),
    ("record data longer than the message", hdr(ar=1) + Q + b"\x00" + struct.pack("!HHIH", 1, 1, 0, 50) + b"\x01", True),
    ("OPT in the answer section", hdr(an=1) + Q + opt(), True),
    ("two OPT records", hdr(ar=2) + Q + opt() + opt(), True),
    ("OPT owner is not the root", hdr(ar=1) + Q + opt(name=b"\x01a\x00"), True),
    ("option length past the OPT data", hdr(ar=1) + Q + opt(struct.pack("!HH", 10, 20) + b"\x00" * 4), True),
    ("OPT data with a partial option header", hdr(ar=1) + Q + opt(b"\x00\x0a\x00"), True),
    ("ECS family 3", hdr(ar=1) + Q + opt(ecs_opt(family=3)), True),
    ("ECS source longer than IPv4", hdr(ar=1) + Q + opt(ecs_opt(src=33, addr=b"\x01\x02\x03\x04\x05")), True),
    ("ECS scope set in a query", hdr(ar=1) + Q + opt(ecs_opt(scope=24)), True),
    ("ECS address too long for /24", hdr(ar=1) + Q + opt(ecs_opt(addr=b"\xc6\x12\x01\x00")), True),
    ("ECS address too short for /24", hdr(ar=1) + Q + opt(ecs_opt(addr=b"\xc6\x12")), True),
    ("ECS bits set past the prefix", hdr(ar=1) + Q + opt(ecs_opt(src=23, addr=b"\xc6\x12\x01")), True),
    ("ECS option shorter than its fixed part", hdr(ar=1) + Q + opt(struct.pack("!HH", 8, 2) + b"\x00\x01"), True),
    ("two ECS options", hdr(ar=1) + Q + opt(ecs_opt() + ecs_opt()), True),
]


@pytest.mark.parametrize("desc,data,reply", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_queries_raise_formerr_only(desc, data, reply):
    with pytest.raises(FormErr) as ei:
        parse_query(data)
    assert ei.value.reply is reply, ei.value.reason
    if reply:
        assert ei.value.msg_id == 0x1234
        err = dns.message.from_wire(encode_error(ei.value.msg_id, ei.value.flags, Rcode.FORMERR))
        assert err.rcode() == dns.rcode.FORMERR and err.id == 0x1234 and err.flags & dns.flags.QR


# --------------------------------------------------------------------------- encoding


def rr(name: str, rtype: int, ttl: int, *rdatas) -> RRset:
    return RRset(name_from_text(name), rtype, ttl, tuple(rdatas))


def decode(query_bytes: bytes, resp: Response, **kw) -> dns.message.Message:
    q = parse_query(query_bytes)
    return dns.message.from_wire(encode_response(q, resp, **kw))


def test_response_reads_back_with_dnspython():
    qb = make("WWW.Example.COM", "A")
    resp = Response(
        answer=(rr("WWW.Example.COM", RType.CNAME, 300, (CompName(name_from_text("edge.example.net")),)),
                rr("edge.example.net", RType.A, 20, (b"\x0a\x00\x00\x01",), (b"\x0a\x00\x00\x02",))),
        authority=(rr("example.net", RType.NS, 3600, (CompName(name_from_text("ns1.example.net")),)),),
        additional=(rr("ns1.example.net", RType.A, 3600, (b"\x7f\x00\x00\x01",)),),
    )
    m = decode(qb, resp)
    assert m.id == dns.message.from_wire(qb).id
    assert m.flags & dns.flags.QR and m.flags & dns.flags.AA and m.flags & dns.flags.RD
    assert m.question[0].name.to_text() == "WWW.Example.COM."  # the query's spelling
    assert [r.to_text() for r in m.answer] == [
        "WWW.Example.COM. 300 IN CNAME edge.example.net.",
        "edge.example.net. 20 IN A 10.0.0.1\nedge.example.net. 20 IN A 10.0.0.2",
    ]
    assert m.authority[0].to_text() == "example.net. 3600 IN NS ns1.example.net."
    assert m.additional[0].to_text() == "ns1.example.net. 3600 IN A 127.0.0.1"


def test_names_are_compressed():
    qb = make("www.example.com", "A")
    many = tuple((bytes([10, 0, 0, i]),) for i in range(20))
    resp = Response(answer=(rr("www.example.com", RType.A, 60, *many),))
    raw = encode_response(parse_query(qb), resp)
    # 12 header + 21 question + 20 * (2 pointer + 10 fixed + 4 address)
    assert len(raw) == 12 + 21 + 20 * 16
    mx = Response(answer=(rr("example.com", RType.MX, 60, (b"\x00\x0a", CompName(name_from_text("mail.EXAMPLE.com")))),))
    m = decode(make("example.com", "MX"), mx)
    # compression is case-insensitive (as in dnspython and BIND): the suffix points at the
    # question's spelling
    assert m.answer[0].to_text() == "example.com. 60 IN MX 10 mail.example.com."


def test_no_edns_no_opt_and_edns_gets_opt_with_our_payload():
    assert decode(make("a.example", "A"), Response()).edns == -1
    m = decode(make("a.example", "A", use_edns=0, payload=4096, want_dnssec=True), Response(), payload=1400)
    assert m.edns == 0 and m.payload == 1400 and m.ednsflags & dns.flags.DO


def test_ecs_is_echoed_with_the_scope():
    m = decode(ecs_query("a.example", "198.18.1.0", 24), Response(ecs_scope=16))
    (o,) = m.options
    assert (o.address, o.srclen, o.scopelen) == ("198.18.1.0", 24, 16)
    m = decode(ecs_query("a.example", "2001:db8::", 48), Response(ecs_scope=32))
    assert (m.options[0].address, m.options[0].srclen, m.options[0].scopelen) == ("2001:db8::", 48, 32)
    m = decode(ecs_query("a.example", "198.18.1.0", 24), Response(ecs_scope=None))
    assert m.options == ()


def test_truncation_sets_tc_and_keeps_only_question_and_opt():
    big = tuple((bytes([10, 0, i // 256, i % 256]),) for i in range(100))
    resp = Response(answer=(rr("www.example.com", RType.A, 60, *big),))
    qb = make("www.example.com", "A", use_edns=0, payload=1232)
    full = decode(qb, resp, max_size=65535)
    assert len(full.answer[0]) == 100 and not full.flags & dns.flags.TC
    cut = decode(qb, resp, max_size=512)
    assert cut.flags & dns.flags.TC and not cut.answer and cut.edns == 0
    assert cut.question[0].name.to_text() == "www.example.com."


def test_extended_rcode_badvers():
    m = decode(make("a.example", "A", use_edns=1), Response(rcode=Rcode.BADVERS, aa=False))
    assert m.rcode() == dns.rcode.BADVERS


def test_nxdomain_flags_and_cd_copied():
    qb = make("a.example", "A")
    q = parse_query(qb)
    q2 = Query(q.msg_id, q.flags | 0x0010, q.qname, q.qtype, q.qclass, None)  # CD
    m = dns.message.from_wire(encode_response(q2, Response(rcode=Rcode.NXDOMAIN)))
    assert m.rcode() == dns.rcode.NXDOMAIN and m.flags & dns.flags.CD and m.flags & dns.flags.AA


# --------------------------------------------------------------------------- names


def test_name_helpers():
    w = name_from_text("WWW.example.com.")
    assert w == b"\x03WWW\x07example\x03com\x00"
    assert name_to_text(w) == "WWW.example.com."
    assert name_to_text(b"\x00") == "."
    assert split_labels(w) == [b"WWW", b"example", b"com"]
    assert name_to_text(b"\x03a.b\x00") == "a\\.b."
    assert is_subdomain(b"\x03www\x07example\x03com\x00", b"\x07example\x03com\x00")
    assert not is_subdomain(b"\x0aeexample\x03com\x00"[:0] + b"\x08xexample\x03com\x00", b"\x07example\x03com\x00")
    with pytest.raises(ValueError):
        name_from_text("a..b")
    with pytest.raises(ValueError):
        name_from_text("a" * 64 + ".com")
