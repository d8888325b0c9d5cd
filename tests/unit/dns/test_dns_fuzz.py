"""Fuzzing the query decoder: whatever arrives, it returns a Query or raises FormErr.

Three generators: random octets; valid queries (dnspython-built, with EDNS and ECS) with
octets flipped, inserted, cut and appended; and hand-shaped messages full of compression
pointers, the classic way to make a DNS parser loop. Hypothesis' deadline is the "never
hangs" check: one parse must finish within it.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herder.dns.answer import View, answer
from herder.dns.geo import ClientPrefix
from herder.dns.wire import FormErr, Response, encode_response, parse_query
from herder.dns.zone import ZoneSet, load_zone_text

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=400, deadline=500, database=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = [
    dns.message.make_query("www.example.com", "A").to_wire(),
    dns.message.make_query("WWW.example.com", "AAAA", use_edns=0, payload=4096, want_dnssec=True).to_wire(),
    dns.message.make_query("a.b.example.com", "TXT", use_edns=0,
                           options=[dns.edns.ECSOption("198.18.1.0", 24)]).to_wire(),
    dns.message.make_query("example.com", "MX", use_edns=0,
                           options=[dns.edns.ECSOption("2001:db8::", 48), dns.edns.GenericOption(10, b"12345678")]).to_wire(),
]

ZONE = load_zone_text("$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\nwww A 10.0.0.1\n*.w TXT x\n",
                      "example.com.")
VIEW = View.build(ZoneSet([ZONE]))


def check(data: bytes) -> None:
    """The property: parse, and if it parses, answer and encode without an exception."""
    try:
        q = parse_query(data)
    except FormErr as e:
        assert isinstance(e.reply, bool)
        return
    resp = answer(q, ClientPrefix(4, 0xC6120101, 32), VIEW)
    assert isinstance(resp, Response)
    out = encode_response(q, resp, max_size=512)
    assert len(out) <= 512 or q.qname == b""


@FUZZ
@given(st.binary(max_size=600))
def test_random_octets(data):
    check(data)


@FUZZ
@given(st.binary(min_size=12, max_size=12), st.binary(max_size=300))
def test_random_body_behind_a_plausible_header(head, body):
    # one question, no response bit, so the parser gets past the header checks
    h = bytearray(head)
    h[2] &= 0x07
    h[4:6] = b"\x00\x01"
    check(bytes(h) + body)


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_valid_queries(data):
    check(data)


@st.composite
def pointer_mazes(draw):
    """A header, then names made of labels and pointers anywhere (loops included)."""
    n_rr = draw(st.integers(0, 3))
    head = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, n_rr)
    body = bytearray()
    for _ in range(1 + n_rr):
        for _ in range(draw(st.integers(0, 5))):
            if draw(st.booleans()):
                body += b"\x01x"
            else:
                target = draw(st.integers(0, 12 + 60))
                body += bytes((0xC0 | (target >> 8), target & 0xFF))
        if draw(st.booleans()):
            body += b"\x00"
        body += draw(st.binary(min_size=0, max_size=14))
    return head + bytes(body)


@FUZZ
@given(pointer_mazes())
def test_pointer_mazes(data):
    check(data)


def test_worst_case_pointer_chain_is_bounded():
    # A long chain of strictly backward pointers, each behind one label: legal, but it must
    # stop at 255 octets of name.
    head = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0)
    body = bytearray(b"\x01a\x00")  # offset 12: "a."
    for _ in range(200):
        prev = 12 + len(body) - (3 if len(body) == 3 else 4)
        body += b"\x01a" + bytes((0xC0 | (prev >> 8), prev & 0xFF))
    last = 12 + len(body) - 4
    msg = head + bytes(body) + bytes((0xC0 | (last >> 8), last & 0xFF)) + b"\x00\x01\x00\x01"
    with pytest.raises(FormErr):
        parse_query(msg)
