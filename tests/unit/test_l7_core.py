"""Pure L7 pieces: response heads, cookies, ACLs, rules, rate table, cache freshness."""

from __future__ import annotations

import pytest

from herder.l7.core.acl import AclError, RequestView, parse_acl, parse_condition
from herder.l7.core.cache import Cache, CachePolicy, Entry, freshness, request_bypasses
from herder.l7.core.cookie import CookiePolicy, request_cookie, response_cookies
from herder.l7.core.http import BadResponse, parse_response_head
from herder.l7.core.rules import HttpRule, RateTable, apply_rules

pytestmark = pytest.mark.unit


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines)


def test_response_head_framing_and_hop_by_hop():
    rh = parse_response_head(head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Connection: keep-alive",
                                  b"Keep-Alive: timeout=5", b"X-A: 1"), request_method=b"GET", want_cookies=False)
    assert (rh.status, rh.length, rh.chunked, rh.close_delimited, rh.server_close) == (200, 5, False, False, False)
    assert rh.head == head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"X-A: 1")


@pytest.mark.parametrize(("lines", "method", "expect"), [
    ((b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", b"Content-Length: 9"), b"GET", ("chunked", None)),
    ((b"HTTP/1.1 200 OK",), b"GET", ("close", None)),
    ((b"HTTP/1.1 200 OK", b"Content-Length: 9"), b"HEAD", ("length", 0)),
    ((b"HTTP/1.1 304 Not Modified", b"Content-Length: 9"), b"GET", ("length", 0)),
    ((b"HTTP/1.1 204 No Content",), b"GET", ("length", 0)),
    ((b"HTTP/1.0 200 OK", b"Content-Length: 1"), b"GET", ("length", 1)),
])
def test_response_framing_rules(lines, method, expect):
    rh = parse_response_head(head(*lines), request_method=method, want_cookies=False)
    kind = "chunked" if rh.chunked else "close" if rh.close_delimited else "length"
    assert (kind, rh.length if kind != "chunked" else None) == expect
    if lines[0].startswith(b"HTTP/1.0"):
        assert rh.server_close
    if kind == "chunked":
        assert b"Content-Length" not in rh.head


@pytest.mark.parametrize("lines", [
    (b"HTTP/1.1 2000 OK",),
    (b"HTTX/1.1 200 OK",),
    (b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Content-Length: 4"),
    (b"HTTP/1.1 200 OK", b"Content-Length: -1"),
    (b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip"),
])
def test_bad_responses(lines):
    with pytest.raises(BadResponse):
        parse_response_head(head(*lines), request_method=b"GET", want_cookies=False)


def test_connection_named_headers_are_removed():
    rh = parse_response_head(head(b"HTTP/1.1 200 OK", b"Connection: close, X-Secret", b"X-Secret: 1",
                                  b"Content-Length: 0"), request_method=b"GET", want_cookies=False)
    assert rh.server_close and b"X-Secret" not in rh.head


def test_prefix_cookie_round_trip():
    pol = CookiePolicy(b"JSESSIONID", "prefix")
    server, new = request_cookie([b"a=1; JSESSIONID=B~xyz; b=2"], pol)
    assert server == b"B" and new == [b"a=1; JSESSIONID=xyz; b=2"]
    out, private = response_cookies([b"JSESSIONID=xyz; path=/"], pol, b"B", True)
    assert out == [b"JSESSIONID=B~xyz; path=/"] and not private


def test_insert_indirect_nocache_cookie():
    pol = CookiePolicy(b"SRV", "insert", indirect=True, nocache=True, httponly=True)
    server, new = request_cookie([b"SRV=A"], pol)
    assert server == b"A" and new == []
    assert response_cookies([], pol, b"A", client_had_it=True) == ([], False)
    assert response_cookies([], pol, b"A", client_had_it=False) == ([b"SRV=A; path=/; HttpOnly"], True)


def test_rewrite_cookie():
    pol = CookiePolicy(b"S", "rewrite")
    assert response_cookies([b"S=whatever; Secure", b"T=1"], pol, b"C", False) == ([b"S=C; Secure", b"T=1"], False)


def view(path=b"/", method=b"GET", headers=(), ip="198.18.0.1") -> RequestView:
    return RequestView(method, path, list(headers), ip)


def test_acls_and_conditions():
    acls = {
        "api": parse_acl("api", "path_beg", ["/api/", "/v2/"]),
        "img": parse_acl("img", "path_end", ["-i", ".PNG"]),
        "lan": parse_acl("lan", "src", ["198.18.0.0/24"]),
        "host": parse_acl("host", "hdr(host)", ["-i", "Example.test"]),
        "post": parse_acl("post", "method", ["POST"]),
    }
    c = parse_condition(["if", "api", "!lan", "||", "img"], acls)
    assert c(view(b"/api/x", ip="198.18.1.1"))
    assert not c(view(b"/api/x"))
    assert c(view(b"/a.png"))
    assert parse_condition(["unless", "host"], acls)(view(headers=[(b"Host", b"other")]))
    assert parse_condition(["if", "post", "host"], acls)(view(method=b"POST", headers=[(b"host", b"EXAMPLE.test")]))
    with pytest.raises(AclError):
        parse_condition(["if", "nope"], acls)
    with pytest.raises(AclError):
        parse_acl("x", "url_foo", ["1"])


def test_rules_stop_at_allow_deny_redirect_and_edit_headers():
    acls = {"adm": parse_acl("adm", "path_beg", ["/admin"])}
    rules = (
        HttpRule("set-header", name=b"X-A", value=b"1"),
        HttpRule("deny", status=403, cond=parse_condition(["if", "adm"], acls)),
        HttpRule("del-header", name=b"x-b"),
        HttpRule("set-priority-class", priority=-5),
    )
    h = [(b"X-A", b"0"), (b"X-B", b"2")]
    d = apply_rules(rules, view(b"/x"), h)
    assert d.status == 0 and d.priority == -5 and h == [(b"X-A", b"1")]
    assert apply_rules(rules, view(b"/admin"), []).status == 403
    red = apply_rules((HttpRule("redirect", value=b"https://x", prefix=True, status=301),), view(b"/p?q"), [])
    assert (red.status, red.location) == (301, b"https://x/p?q")


def test_rate_table_sliding_window():
    t = RateTable(10.0)
    assert [t.hit("a", 0.0 + i * 0.1) for i in range(3)] == [1, 2, 3]
    # half-way through the next period, half of the previous period's count remains
    assert t.hit("a", 15.0) == pytest.approx(1 + 3 * 0.5)
    assert t.hit("b", 15.0) == 1
    assert t.hit("a", 40.0) == 1


def test_rate_table_is_bounded():
    t = RateTable(1.0, size=10)
    for i in range(100):
        t.hit(str(i), 0.0)
    assert len(t) <= 10


@pytest.mark.parametrize(("cc", "exp", "want"), [
    (b"max-age=30", None, 30.0),
    (b"s-maxage=5, max-age=30", None, 5.0),
    (b"max-age=9999", None, 60.0),
    (b"private", None, None),
    (b"no-store", None, None),
    (None, 20.0, 20.0),
    (None, -5.0, 0.0),
    (None, None, 60.0),
])
def test_freshness(cc, exp, want):
    assert freshness(cc, exp, 60.0) == want


def test_request_bypass():
    assert request_bypasses(b"no-cache", None, False)
    assert request_bypasses(None, b"no-cache", False)
    assert request_bypasses(None, None, True)
    assert not request_bypasses(b"max-age=0", None, False)


def test_cache_vary_expiry_and_eviction():
    c = Cache(CachePolicy(total_max_size=1000, max_object_size=500, max_age=60))
    e = Entry(b"HTTP/1.1 200 OK", b"x" * 100, 0.0, 10.0, (b"accept-language",), (b"en",))
    c.store(b"h", b"/a", e)
    assert c.lookup(b"H", b"/a", lambda n: b"en", 5.0) is e
    assert c.lookup(b"h", b"/a", lambda n: b"fr", 5.0) is None
    assert c.lookup(b"h", b"/a", lambda n: b"en", 11.0) is None
    for i in range(20):
        c.store(b"h", b"/%d" % i, Entry(b"H", b"y" * 100, 0.0, 10.0, (), ()))
    assert c.size <= 1000
