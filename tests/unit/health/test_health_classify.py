"""Result classification: every failure gets its layer and its reason, spelled one way."""

from __future__ import annotations

import errno

import pytest

from herder.health.base import Layer, ProbeResult
from herder.health.classify import (
    MAX_BODY,
    connect_failure,
    dechunk,
    dns_result,
    exit_result,
    format_seconds,
    http_request,
    http_result,
    parse_http_head,
    parse_status_expect,
    response_complete,
    status_matches,
    timeout_result,
)

pytestmark = pytest.mark.unit

OK_RANGE = ((200, 399),)


@pytest.mark.parametrize("exc,layer,detail", [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Layer.L4CON, "L4 connection refused"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), Layer.L4CON, "L4 connection reset"),
    (OSError(errno.EHOSTUNREACH, "no route"), Layer.L4CON, "L4 host unreachable"),
    (OSError(errno.ENETUNREACH, "unreachable"), Layer.L4CON, "L4 network unreachable"),
    (OSError(errno.EACCES, "Permission denied"), Layer.L4CON, "L4 connection error: Permission denied"),
    (TimeoutError(), Layer.L4TOUT, "L4 timeout"),
])
def test_connect_failures(exc, layer, detail):
    r = connect_failure(exc)
    assert (r.ok, r.layer, r.detail) == (False, layer, detail)


def test_timeouts_by_phase():
    assert timeout_result(False) == ProbeResult(False, Layer.L4TOUT, "L4 timeout")
    assert timeout_result(True) == ProbeResult(False, Layer.L7TOUT, "L7 timeout")


# (description, response bytes, expect_status, expect_body, ok, layer, detail)
HTTP_CASES = [
    ("200 passes", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", OK_RANGE, None, True, Layer.L7OK, "L7 status 200"),
    ("500 fails with its code", b"HTTP/1.1 500 Internal Server Error\r\n\r\n", OK_RANGE, None,
     False, Layer.L7STS, "L7 status 500"),
    ("302 in the default range", b"HTTP/1.0 302 Found\r\nLocation: /\r\n\r\n", OK_RANGE, None,
     True, Layer.L7OK, "L7 status 302"),
    ("404 outside an exact expect", b"HTTP/1.1 404 Not Found\r\n\r\n", ((200, 200),), None,
     False, Layer.L7STS, "L7 status 404"),
    ("body substring found", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nstatus=up", OK_RANGE, "=up",
     True, Layer.L7OK, "L7 status 200"),
    ("body mismatch", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndown", OK_RANGE, "up",
     False, Layer.L7RSP, "L7 body mismatch"),
    ("body beyond Content-Length does not count", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nnoup", OK_RANGE,
     "up", False, Layer.L7RSP, "L7 body mismatch"),
    ("chunked body is decoded before matching", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nsta\r\n5\r\ntus=u\r\n1\r\np\r\n0\r\n\r\n", OK_RANGE, "status=up", True, Layer.L7OK, "L7 status 200"),
    ("status checked before body", b"HTTP/1.1 503 Unavailable\r\n\r\nup", OK_RANGE, "up",
     False, Layer.L7STS, "L7 status 503"),
    ("not HTTP", b"SSH-2.0-OpenSSH_9.2\r\n", OK_RANGE, None, False, Layer.L7RSP,
     "L7 invalid response: not an HTTP response"),
    ("bad status line", b"HTTP/1.1 abc\r\n\r\n", OK_RANGE, None, False, Layer.L7RSP,
     "L7 invalid response: bad status line"),
    ("closed without a byte", b"", OK_RANGE, None, False, Layer.L7RSP,
     "L7 invalid response: connection closed without a response"),
    ("truncated head", b"HTTP/1.1 200 OK\r\nContent-", OK_RANGE, None, False, Layer.L7RSP,
     "L7 invalid response: truncated head"),
]


@pytest.mark.parametrize("desc,data,expect,body,ok,layer,detail", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_http_results(desc, data, expect, body, ok, layer, detail):
    r = http_result(data, expect, body, eof=True)
    assert (r.ok, r.layer, r.detail) == (ok, layer, detail)


@pytest.mark.parametrize("value,ranges", [
    (200, ((200, 200),)),
    ("200-399", ((200, 399),)),
    ("2xx", ((200, 299),)),
    ([204, "3xx"], ((204, 204), (300, 399))),
    ("404", ((404, 404),)),
])
def test_parse_status_expect(value, ranges):
    assert parse_status_expect(value) == ranges


@pytest.mark.parametrize("value", ["abc", "400-200", 99, 600, "2xy", [], True, 1.5, "200-"])
def test_parse_status_expect_rejects(value):
    with pytest.raises(ValueError):
        parse_status_expect(value)


def test_status_matches():
    assert status_matches(250, ((200, 299),)) and not status_matches(300, ((200, 299),))


def test_response_complete():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    assert not response_complete(b"HTTP/1.1 200 OK\r\n", head_only=True)
    assert response_complete(head, head_only=True)
    assert not response_complete(head + b"ab", head_only=False)
    assert response_complete(head + b"abcd", head_only=False)
    assert response_complete(b"HTTP/1.1 204 No Content\r\n\r\n", head_only=False)
    no_length = b"HTTP/1.0 200 OK\r\n\r\nsome"
    assert not response_complete(no_length, head_only=False)  # complete at EOF only
    assert response_complete(no_length + b"x" * MAX_BODY, head_only=False)
    with pytest.raises(ValueError):
        response_complete(b"garbage\r\n\r\n", head_only=True)


def test_parse_head_and_dechunk():
    h = parse_http_head(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert h is not None and h.status == 200 and h.header("x-a") == "2" and h.chunked
    assert dechunk(b"2\r\nok\r\n") is None
    assert dechunk(b"2\r\nok\r\n0\r\n\r\n") == b"ok"
    with pytest.raises(ValueError):
        dechunk(b"zz\r\n")


def test_http_request_bytes():
    r = http_request("HEAD", "/index.html", "1.0", None)
    assert r.startswith(b"HEAD /index.html HTTP/1.0\r\n") and b"Host:" not in r and b"Connection" not in r
    r = http_request("GET", "/health", "1.1", "www.example.test", [("X-Check", "1")])
    assert b"Host: www.example.test\r\n" in r and b"Connection: close\r\n" in r and b"X-Check: 1\r\n" in r
    assert r.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("rc,timed_out,ok,layer,detail", [
    (0, False, True, Layer.PROCOK, "exit status 0"),
    (1, False, False, Layer.PROCERR, "exit status 1"),
    (2, False, False, Layer.PROCERR, "exit status 2"),
    (-9, False, False, Layer.PROCERR, "killed by signal 9 (SIGKILL)"),
    (None, True, False, Layer.PROCTOUT, "timeout after 2.0s: killed"),
])
def test_exit_results(rc, timed_out, ok, layer, detail):
    r = exit_result(rc, timed_out, 2.0)
    assert (r.ok, r.layer, r.detail) == (ok, layer, detail)


def test_format_seconds():
    assert [format_seconds(x) for x in (2, 0.3, 0.25, 10)] == ["2.0s", "0.3s", "0.25s", "10.0s"]


@pytest.mark.parametrize("rcode,answers,expect_rcode,expect_answer,ok,layer,detail", [
    ("NOERROR", ["192.0.2.1"], "NOERROR", None, True, Layer.L7OK, "L7 rcode NOERROR"),
    ("NXDOMAIN", [], "NOERROR", None, False, Layer.L7STS, "L7 rcode NXDOMAIN"),
    ("NXDOMAIN", [], "NXDOMAIN", None, True, Layer.L7OK, "L7 rcode NXDOMAIN"),
    ("NOERROR", ["192.0.2.1"], "NOERROR", ["192.0.2.2"], False, Layer.L7RSP, "L7 answer mismatch"),
    ("NOERROR", ["www.example.test.", "192.0.2.1"], "NOERROR", ["WWW.example.test"], True, Layer.L7OK,
     "L7 rcode NOERROR"),
])
def test_dns_results(rcode, answers, expect_rcode, expect_answer, ok, layer, detail):
    r = dns_result(rcode, answers, expect_rcode, expect_answer)
    assert (r.ok, r.layer, r.detail) == (ok, layer, detail)


def test_layer_levels():
    assert Layer.L4CON.level == "L4" and Layer.L7STS.level == "L7" and Layer.PROCTOUT.level == "EXEC"
    assert Layer.L7OK.ok and not Layer.L7STS.ok
