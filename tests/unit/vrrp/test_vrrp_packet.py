"""The VRRP codec, table-driven from captures of keepalived 2.2.7's adverts on the lab LAN,
and the receive-side checks of RFC 5798 section 7.1 (malformed adverts dropped and counted)."""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herder.ha.vrrp.machine import InstanceConfig, State, VrrpMachine
from herder.ha.vrrp.packet import (
    MCAST_V4,
    MCAST_V6,
    Advert,
    MalformedPacket,
    build_ipv4,
    checksum,
    decode,
    parse_ipv4,
    peek_vrid,
    pseudo_header,
)

pytestmark = pytest.mark.unit

A = ip_address
KA_SRC = A("198.18.0.2")
KA_SRC6 = A("fe80::44c5:2dff:fe19:a1ff")
VIPS = (A("198.18.0.100"), A("198.18.0.101"))

# (description, version, src, dst, hex of the VRRP message, expected advert)
CAPTURES = [
    ("keepalived v2, prio 101, 1 s", 2, KA_SRC, MCAST_V4,
     "21336502 0001ecda c6120064 c6120065 00000000 00000000", Advert(2, 51, 101, 100, VIPS, 4)),
    ("keepalived v2, priority 0 on stop", 2, KA_SRC, MCAST_V4,
     "21330002 000151db c6120064 c6120065 00000000 00000000", Advert(2, 51, 0, 100, VIPS, 4)),
    ("keepalived v3 IPv4, 10 cs", 3, KA_SRC, MCAST_V4,
     "31336502 000a362a c6120064 c6120065", Advert(3, 51, 101, 10, VIPS, 4)),
    ("keepalived v3 IPv4, priority 0", 3, KA_SRC, MCAST_V4,
     "31330002 000a9b2a c6120064 c6120065", Advert(3, 51, 0, 10, VIPS, 4)),
    ("keepalived v3 IPv6 from link-local", 3, KA_SRC6, MCAST_V6,
     "31346501 000a37c1 20010002 00000000 00000000 00000100", Advert(3, 52, 101, 10, (A("2001:2::100"),), 6)),
    ("keepalived v3 IPv6, priority 0", 3, KA_SRC6, MCAST_V6,
     "31340001 000a9cc1 20010002 00000000 00000000 00000100", Advert(3, 52, 0, 10, (A("2001:2::100"),), 6)),
]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("desc, version, src, dst, hexmsg, want", CAPTURES, ids=[c[0] for c in CAPTURES])
def test_keepalived_captures_decode_and_reencode_byte_for_byte(desc, version, src, dst, hexmsg, want):
    data = h(hexmsg)
    adv = decode(data, src, dst)
    assert adv == want and adv.version == version
    assert adv.encode(src, dst) == data
    assert peek_vrid(data) == want.vrid


def test_ipv4_header_of_a_keepalived_advert():
    raw = h("45c0002c 00020000 ff701479 c6120002 e0000012") + h(CAPTURES[0][4])
    pkt = parse_ipv4(raw)
    assert (pkt.src, pkt.dst, pkt.ttl, pkt.protocol, pkt.tos) == (KA_SRC, MCAST_V4, 255, 112, 0xC0)
    assert build_ipv4(pkt.src, pkt.dst, pkt.payload, ident=2) == raw


def test_v3_unicast_checksum_covers_the_peer_and_old_keepalived_used_the_group():
    adv = Advert(3, 7, 100, 100, (A("198.18.0.100"),))
    peer = A("198.18.0.3")
    data = adv.encode(KA_SRC, peer)
    assert decode(data, KA_SRC, peer) == adv
    old_style = adv.encode(KA_SRC, MCAST_V4)  # keepalived < 1.3.7: group address in the pseudo-header
    with pytest.raises(MalformedPacket):
        decode(old_style, KA_SRC, peer)
    assert decode(old_style, KA_SRC, peer, alt_dst=MCAST_V4) == adv


def test_pseudo_headers():
    assert pseudo_header(KA_SRC, MCAST_V4, 16) == h("c6120002 e0000012 0070 0010")
    assert pseudo_header(KA_SRC6, MCAST_V6, 24)[32:] == h("00000018 000000 70")
    with pytest.raises(ValueError):
        pseudo_header(KA_SRC, MCAST_V6, 8)


def test_checksum_rfc1071_example():
    # RFC 1071 section 3 example bytes: the sum is 0xddf2, the checksum its complement
    assert checksum(h("0001f203f4f5f6f7")) == (~0xDDF2) & 0xFFFF
    assert checksum(b"\x01") == (~0x0100) & 0xFFFF


# (description, message bytes, reason)
V3 = h(CAPTURES[2][4])
V2 = h(CAPTURES[0][4])
MALFORMED = [
    ("empty", b"", "length"),
    ("header cut short", V3[:6], "length"),
    ("count promises a third address", V3[:3] + b"\x03" + V3[4:], "length"),
    ("trailing byte", V3 + b"\0", "length"),
    ("v2 without its auth data", V2[:-8], "length"),
    ("version 1", bytes([0x11]) + V3[1:], "version"),
    ("version 4", bytes([0x41]) + V3[1:], "version"),
    ("type 2", bytes([0x32]) + V3[1:], "type"),
    ("bad checksum", V3[:6] + b"\x00\x00" + V3[8:], "checksum"),
    ("one flipped address bit", V3[:-1] + bytes([V3[-1] ^ 1]), "checksum"),
    ("v3 interval 0", V3[:4] + b"\x00\x00" + V3[6:], "interval"),
]


@pytest.mark.parametrize("desc, data, reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_raises_one_error_type(desc, data, reason):
    with pytest.raises(MalformedPacket) as ei:
        decode(data, KA_SRC, MCAST_V4)
    assert ei.value.reason == reason


def test_v2_over_ipv6_is_refused_both_ways():
    with pytest.raises(MalformedPacket, match="family"):
        decode(V2, KA_SRC6, MCAST_V6)
    with pytest.raises(ValueError):
        Advert(2, 1, 100, 100, (A("2001:2::1"),), 6)


@pytest.mark.parametrize("kwargs", [
    {"vrid": 0}, {"vrid": 256}, {"priority": 256}, {"interval_cs": 150},  # v2: whole seconds
    {"version": 3, "interval_cs": 4096}, {"version": 3, "interval_cs": 0},
])
def test_out_of_range_adverts_are_caller_errors(kwargs):
    base = {"version": 2, "vrid": 1, "priority": 100, "interval_cs": 100, "addresses": VIPS}
    with pytest.raises(ValueError):
        Advert(**{**base, **kwargs})


@given(data=st.binary(max_size=80))
def test_decode_never_fails_with_anything_but_malformed(data):
    try:
        decode(data, KA_SRC, MCAST_V4)
    except MalformedPacket:
        pass


@given(version=st.sampled_from([2, 3]), vrid=st.integers(1, 255), prio=st.integers(0, 255),
       n=st.integers(0, 20), secs=st.integers(1, 255), cs=st.integers(1, 4095))
def test_roundtrip(version, vrid, prio, n, secs, cs):
    addrs = tuple(A(f"198.18.1.{i}") for i in range(n))
    adv = Advert(version, vrid, prio, secs * 100 if version == 2 else cs, addrs, 4)
    assert decode(adv.encode(KA_SRC, MCAST_V4), KA_SRC, MCAST_V4) == adv


# --------------------------------------------------------------------------- RFC 5798 section 7.1


def backup_machine(**kw) -> VrrpMachine:
    c = InstanceConfig("VI_1", 51, 100, kw.pop("version", 3), 4, kw.pop("advert", 0.1), VIPS, **kw)
    m = VrrpMachine(c, A("198.18.0.3"))
    m.start(0.0)
    while m.next_action():
        pass
    return m


def v3(**kw) -> bytes:
    a = {"version": 3, "vrid": 51, "priority": 150, "interval_cs": 10, "addresses": VIPS, **kw}
    return Advert(**a).encode(KA_SRC, MCAST_V4)


def v2(**kw) -> bytes:
    a = {"version": 2, "vrid": 51, "priority": 150, "interval_cs": 100, "addresses": VIPS, **kw}
    return Advert(**a).encode(KA_SRC, MCAST_V4)


def with_auth(msg: bytes, auth_type: int) -> bytes:
    raw = msg[:4] + bytes([auth_type]) + msg[5:6] + b"\0\0" + msg[8:]
    return raw[:6] + struct.pack("!H", checksum(raw)) + raw[8:]


# (description, machine options, message, received kwargs, expected drop reason)
DROPS = [
    ("TTL 254 (crossed a router)", {}, v3(), {"ttl": 254}, "ttl"),
    ("TTL 1", {}, v3(), {"ttl": 1}, "ttl"),
    ("bad checksum", {}, V3[:6] + b"\xde\xad" + V3[8:], {}, "checksum"),
    ("truncated", {}, v3()[:10], {}, "length"),
    ("version 2 advert to a v3 instance", {}, v2(), {}, "version"),
    ("another VRID", {}, v3(vrid=52), {}, "vrid"),
    ("v2 interval mismatch", {"version": 2, "advert": 1.0}, v2(interval_cs=200), {}, "interval"),
    ("v2 simple-password auth", {"version": 2, "advert": 1.0}, with_auth(v2(), 1), {}, "auth"),
    ("address list mismatch", {}, v3(addresses=(A("198.18.0.200"),)), {}, "address_list"),
    ("unicast advert to a multicast instance", {}, Advert(3, 51, 150, 10, VIPS).encode(KA_SRC, A("198.18.0.3")),
     {"dst": A("198.18.0.3")}, "destination"),
    ("our own address", {}, Advert(3, 51, 150, 10, VIPS).encode(A("198.18.0.3"), MCAST_V4),
     {"src": A("198.18.0.3")}, "own"),
]


@pytest.mark.parametrize("desc, opts, msg, rx, reason", DROPS, ids=[d[0] for d in DROPS])
def test_invalid_adverts_are_dropped_counted_and_never_acted_on(desc, opts, msg, rx, reason):
    m = backup_machine(**opts)
    timer = m.get_timer()
    src = rx.pop("src", KA_SRC)
    verdict = m.receive_advert(msg, src, 0.05, ttl=rx.pop("ttl", 255), dst=rx.pop("dst", MCAST_V4))
    assert verdict == reason
    assert m.stats.dropped == {reason: 1} and m.stats.adverts_received == 0
    assert m.state is State.BACKUP and m.get_timer() == timer and m.master is None
    assert m.next_action() is None


def test_address_list_mismatch_is_reported_as_a_vrid_collision(caplog):
    m = backup_machine()
    other = (A("198.18.0.200"),)
    for t in (0.01, 0.02, 0.03):
        m.receive_advert(v3(addresses=other), KA_SRC, t)
    assert [r.message for r in caplog.records if "collision" in r.message] == [
        "(VI_1) VRID 51 collision: 198.18.0.2 advertises 198.18.0.200 (priority 150), we have "
        "198.18.0.100, 198.18.0.101"]
    col = m.collisions[KA_SRC]
    assert col.count == 3 and col.addresses == other
    assert m.status()["collisions"] == [{"from": "198.18.0.2", "addresses": ["198.18.0.200"], "priority": 150,
                                         "count": 3}]


def test_an_owner_advert_with_other_addresses_is_still_processed():
    m = backup_machine()
    assert m.receive_advert(v3(priority=255, addresses=(A("198.18.0.200"),)), KA_SRC, 0.01) is None
    assert m.master == KA_SRC and KA_SRC in m.collisions


def test_unicast_instances_skip_the_ttl_check_and_accept_old_checksums():
    m = backup_machine(unicast=True)
    peer = A("198.18.0.3")
    old = Advert(3, 51, 150, 10, VIPS).encode(KA_SRC, MCAST_V4)
    assert m.receive_advert(old, KA_SRC, 0.01, ttl=64, dst=peer) is None
    assert m.master == KA_SRC


def test_valid_advert_in_any_address_order_is_accepted():
    m = backup_machine()
    assert m.receive_advert(v3(addresses=tuple(reversed(VIPS))), KA_SRC, 0.01) is None
    assert m.stats.adverts_received == 1 and not m.stats.dropped
