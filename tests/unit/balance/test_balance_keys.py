"""Key extraction (HAProxy get_server_sh/uh/hh, nginx ip_hash), as plain functions."""

from __future__ import annotations

import ipaddress

import pytest

from herder.balance.keys import (
    KeySpec,
    address_bytes,
    cookie_key,
    cookie_value,
    destination_key,
    header_key,
    query_param,
    source_key,
    source_port_key,
    uri_key,
    uri_part,
    url_param_key,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("uri,kw,expected", [
    ("/a/b/c?x=1", {}, "/a/b/c"),
    ("/a/b/c?x=1", {"whole": True}, "/a/b/c?x=1"),
    ("/a/b/c?x=1", {"depth": 1}, "/a"),
    ("/a/b/c?x=1", {"depth": 2}, "/a/b"),
    ("/a/b/c?x=1", {"depth": 5}, "/a/b/c"),
    ("/a/b/c?x=1", {"length": 4}, "/a/b"),
    ("/abcdef/g", {"length": 3, "depth": 1}, "/ab"),
    ("/a?b/c", {"depth": 1}, "/a"),
    ("/a?b/c", {"whole": True, "depth": 1}, "/a?b"),
    ("http://h.example:8080/x/y?q", {"path_only": True}, "/x/y"),
    ("http://h.example:8080/x/y?q", {}, "http://h.example:8080/x/y"),
    ("http://h.example", {"path_only": True}, "/"),
    ("", {}, ""),
])
def test_uri_part_follows_haproxy(uri, kw, expected):
    assert uri_part(uri, **kw) == expected


def test_uri_keys_group_what_haproxy_groups():
    assert uri_key("/img/a.png?v=1") == uri_key("/img/a.png?v=2")
    assert uri_key("/img/a.png?v=1", whole=True) != uri_key("/img/a.png?v=2", whole=True)
    assert uri_key("/img/a.png", depth=1) == uri_key("/img/b.png", depth=1)
    assert uri_key(None) is None


@pytest.mark.parametrize("a,b", [
    ("192.0.2.1", b"\xc0\x00\x02\x01"),
    ("192.0.2.1", "::ffff:192.0.2.1"),
    ("2001:db8::1", "[2001:db8::1]"),
    ("2001:db8::1", "2001:db8::1%eth0"),
    ("192.0.2.1", ipaddress.ip_address("192.0.2.1")),
    (" 192.0.2.1 ", b"192.0.2.1"),
])
def test_addresses_hash_alike_in_every_form(a, b):
    assert source_key(a) == source_key(b) is not None


def test_source_keys():
    assert source_key("198.51.100.7") != source_key("198.51.100.8")
    assert source_key("198.51.100.7", prefix=24) == source_key("198.51.100.8", prefix=24)
    assert source_key("2001:db8::1", prefix=24) != source_key("2001:db8::2", prefix=24)
    assert source_key("2001:db8::1", prefix6=64) == source_key("2001:db8::2", prefix6=64)
    assert address_bytes("10.1.2.3", prefix=0) == b"\x00\x00\x00\x00"
    for bad in (None, "", "not-an-ip", "/run/sock", b"\xff\xfe"):
        assert source_key(bad) is None
    assert source_port_key("192.0.2.1", 1000) != source_port_key("192.0.2.1", 1001)
    assert source_port_key("192.0.2.1", None) is None
    assert destination_key("192.0.2.1") != destination_key("192.0.2.1", 80)


def test_url_params_and_cookies():
    assert query_param("/p?a=1&userid=42&b", "userid") == b"42"
    assert query_param("/p?a=1&b", "b") == b""
    assert query_param("/p?user%20id=x+y", "user id") == b"x y"
    assert query_param("/p", "a") is None and query_param(None, "a") is None
    assert url_param_key("/x?id=12", "id") == url_param_key("/y?z=0&id=12", "id")
    assert url_param_key("/x?idx=12", "id") is None
    assert cookie_value('a=1; sid="abc"; b=2', "sid") == "abc"
    assert cookie_value("a=1", "sid") is None
    assert cookie_key("sid=abc", "sid") == cookie_key("x=1; sid=abc", "sid")


def test_header_keys():
    assert header_key("www.example.com") != header_key("api.example.com")
    assert header_key("www.example.com", use_domain_only=True) == header_key("API.example.com:8080",
                                                                             use_domain_only=True)
    assert header_key(None) is None
    assert header_key("") is not None  # an empty value is a value


def test_keyspec_parses_and_extracts():
    spec = KeySpec.parse("hdr(Host)", use_domain_only=True)
    assert (spec.kind, spec.name) == ("hdr", "Host")
    assert spec.extract(headers={"host": "www.example.com"}) == header_key("x.example.org",
                                                                            use_domain_only=True)
    assert spec.extract(headers=lambda name: None) is None
    assert KeySpec.parse("cookie(sid)").extract(headers={"Cookie": "sid=1"}) == cookie_key("sid=1", "sid")
    assert KeySpec.parse("url_param(id)").extract(uri="/?id=3") == url_param_key("/?id=3", "id")
    assert KeySpec.parse("uri", depth=1).extract(uri="/a/b") == uri_key("/a/x", depth=1) == uri_key("/a")
    assert KeySpec.parse("source").extract(src="192.0.2.9") == source_key("192.0.2.9")
    assert KeySpec.parse("source-port").extract(src="192.0.2.9", src_port=5) == source_port_key("192.0.2.9", 5)
    assert KeySpec.parse("destination-port").extract(dst="192.0.2.9") is None
    assert KeySpec().extract(src="192.0.2.9") is None
    assert str(KeySpec.parse("uri", whole=True, length=10)) == "uri whole len 10"
    with pytest.raises(ValueError):
        KeySpec.parse("hdr")
    with pytest.raises(ValueError):
        KeySpec.parse("body")
