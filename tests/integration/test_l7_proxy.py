"""The HTTP proxy against real sockets: framing, errors, smuggling defences, retries, routing."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from herder import proc
from herder.testing import RecordingBackend as Recorder
from herder.testing import free_port, run_herder, wait_port
from herder.testing import stop_process as stop

pytestmark = pytest.mark.integration


def start_herder(tmp_path, config: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    f = tmp_path / "l7.toml"
    f.write_text(config.replace("PORT", str(port)))
    p = run_herder(str(f), log=open(tmp_path / "herder.log", "w"))
    wait_port("127.0.0.1", port)
    return p, port




def exchange(port: int, data: bytes, timeout: float = 5.0, wait_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if not wait_close and out.count(b"\r\n\r\n"):
                    break
        except TimeoutError:
            pass
        return out


@pytest.fixture
def one_backend(tmp_path):
    be = Recorder("b1")
    cfg = f"""
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
timeout_http_request = "1s"
timeout_http_keep_alive = "1s"
[pools.web]
timeout_server = "1s"
[[pools.web.servers]]
name = "b1"
address = "127.0.0.1:{be.port}"
"""
    p, port = start_herder(tmp_path, cfg)
    yield be, port
    stop(p)
    be.shutdown()


SMUGGLING = {
    "CL and TE": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate CL": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "invalid CL": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\nabc",
    "CL list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    "invalid chunk size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "TE not chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "bare LF": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare CR": b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "TE in HTTP/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two Host headers": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no Host in 1.1": b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
}


@pytest.mark.parametrize("vector", list(SMUGGLING))
def test_smuggling_vector_is_rejected_and_never_reaches_a_backend(one_backend, vector):
    be, port = one_backend
    out = exchange(port, SMUGGLING[vector])
    assert out.startswith(b"HTTP/1.1 400 "), out[:80]
    time.sleep(0.2)  # a connection the proxy might have started would have arrived by now
    assert be.requests() == []
    assert be.connections == 0


def test_over_long_head_gets_431(one_backend):
    be, port = one_backend
    out = exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    assert be.requests() == []


def test_slow_head_gets_408(one_backend):
    be, port = one_backend
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        t0 = time.monotonic()
        out = s.recv(65536)
        waited = time.monotonic() - t0
    assert out.startswith(b"HTTP/1.1 408 ")
    assert waited >= 0.9
    assert be.requests() == []


def test_pipelined_requests_are_answered_in_order(one_backend):
    be, port = one_backend
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(5))
    out = exchange(port, reqs + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    import re

    bodies = re.findall(rb"b1 GET /\w+ 0", out)
    assert bodies == [b"b1 GET /p%d 0" % i for i in range(5)] + [b"b1 GET /last 0"]


def test_head_response_has_no_body_and_keeps_the_connection(one_backend):
    be, port = one_backend
    out = exchange(port, b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.endswith(b"b1 GET /y 0\n")


def test_chunked_response_passes_through_and_is_dechunked_for_http10(one_backend):
    be, port = one_backend
    out = exchange(port, b"GET /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in out and out.endswith(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    out10 = exchange(port, b"GET /chunked HTTP/1.0\r\n\r\n")
    assert b"Transfer-Encoding" not in out10 and out10.endswith(b"\r\n\r\nhello world")


def test_the_plain_python_form_serves_when_asked(tmp_path, monkeypatch):
    """HERDER_NO_EXTENSIONS=1 runs the proxy's plain Python source even where the compiled
    module is installed (the other tests run whichever is installed)."""
    monkeypatch.setenv("HERDER_NO_EXTENSIONS", "1")
    be = Recorder("b1")
    cfg = f"""
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
[[pools.web.servers]]
name = "b1"
address = "127.0.0.1:{be.port}"
"""
    p, port = start_herder(tmp_path, cfg)
    try:
        out = exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert out.count(b"HTTP/1.1 200 OK") == 2 and out.endswith(b"b1 GET /y 0\n")
    finally:
        stop(p)
        be.shutdown()
    assert "l7: the request path runs as plain Python" in (tmp_path / "herder.log").read_text()


def test_http10_keep_alive_only_when_asked_and_http11_by_default(one_backend):
    """The version decides persistence (RFC 9112 §9.3): 1.0 closes unless the client sent
    Connection: keep-alive, 1.1 stays open unless it sent close; and the answers say so."""
    be, port = one_backend
    # HTTP/1.0 without the token: one response, then the proxy closes (no second answer)
    out = exchange(port, b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in out
    # HTTP/1.0 with the token: kept open, both answered, each says keep-alive
    out = exchange(port, b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                   b"GET /d HTTP/1.0\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2
    first, second = out.split(b"HTTP/1.1 200")[1:]
    assert b"Connection: keep-alive" in first and b"Connection: close" in second
    # HTTP/1.1 without Host is refused (the version was told apart from 1.0 without asking)
    assert exchange(port, b"GET /e HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    # HTTP/1.1 with a keep-alive token stays 1.1 (Host still required)
    assert exchange(port, b"GET /f HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").startswith(b"HTTP/1.1 400")
    paths = [r.split(b" ")[1] for r in be.requests()]
    assert paths == [b"/a", b"/c", b"/d"]


def test_chunked_request_body_is_forwarded(one_backend):
    be, port = one_backend
    out = exchange(port, b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"b1 POST /up 5\n")
    assert b"Transfer-Encoding: chunked" in be.requests()[-1]


def test_bad_response_is_502_and_slow_server_is_504(one_backend):
    be, port = one_backend
    assert exchange(port, b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 502 ")
    assert exchange(port, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 504 ")


def test_upstream_connections_are_reused(one_backend):
    be, port = one_backend
    for _ in range(10):
        assert exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert len(be.requests()) == 10
    assert be.connections <= 2


def test_expect_100_continue(one_backend):
    be, port = one_backend
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        s.sendall(b"hello")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"b1 POST /e 5\n")


def test_no_usable_server_is_503(tmp_path):
    cfg = """
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
[pools.web]
retries = 1
[[pools.web.servers]]
name = "gone"
address = "127.0.0.1:9"
admin = "maint"
"""
    p, port = start_herder(tmp_path, cfg)
    try:
        assert exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 503 ")
    finally:
        stop(p)


def test_acl_routing_to_two_pools(tmp_path):
    api, web = Recorder("api"), Recorder("web")
    cfg = f"""
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
[services.www.routing]
acl.is_api = {{ criterion = "path_beg", values = ["/api/"] }}
acl.is_admin_host = {{ criterion = "hdr(host)", values = ["ADMIN.example"], ignore_case = true }}
use = [ {{ pool = "api", if = "is_api || is_admin_host" }} ]
[pools.web]
[[pools.web.servers]]
name = "web"
address = "127.0.0.1:{web.port}"
[pools.api]
[[pools.api.servers]]
name = "api"
address = "127.0.0.1:{api.port}"
"""
    p, port = start_herder(tmp_path, cfg)
    try:
        def who(path: str, host: str = "a") -> bytes:
            out = exchange(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return out.split(b"X-Served-By: ")[1].split(b"\r\n")[0]
        assert who("/api/v1") == b"api"
        assert who("/apix") == b"web"
        assert who("/", "admin.example") == b"api"
        assert who("/") == b"web"
    finally:
        stop(p)
        api.shutdown()
        web.shutdown()


def test_killing_a_backend_under_load_loses_no_request(tmp_path):
    names = ["k1", "k2", "k3"]
    ports = {n: free_port() for n in names}
    children = {n: proc.spawn([proc.python_executable(), "-m", "herder.demo.backend", "--port", str(ports[n]),
                               "--name", n], name=n) for n in names}
    servers = "".join(f'[[pools.web.servers]]\nname = "{n}"\naddress = "127.0.0.1:{ports[n]}"\n' for n in names)
    cfg = f"""
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
[pools.web]
retries = 3
redispatch = true
[[pools.web.checks]]
type = "tcp"
inter = "0.2s"
fall = 2
rise = 1
{servers}"""
    for n in names:
        wait_port("127.0.0.1", ports[n])
    p, port = start_herder(tmp_path, cfg.replace("[pools.web]", "[pools.web]\ninitial_state = \"up\"", 1))
    try:
        def one(i: int) -> int:
            out = exchange(port, f"GET /{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
            return int(out.split(b" ")[1]) if out else 0

        statuses = []
        deadline = time.monotonic() + 30
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, i) for i in range(200)]
            time.sleep(0.3)
            children["k2"].stop(sig=signal.SIGKILL)
            futures += [pool.submit(one, i) for i in range(200, 600)]
            for f in futures:
                statuses.append(f.result(timeout=max(1, deadline - time.monotonic())))
        assert len(statuses) == 600
        assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    finally:
        stop(p)
        for c in children.values():
            c.stop()


def test_proxy_errors_feed_passive_health(tmp_path):
    be = Recorder("alive")
    dead = free_port()
    api = free_port()
    cfg = f"""
[api]
listen = "127.0.0.1:{api}"
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
[pools.web]
retries = 2
redispatch = true
[pools.web.passive]
error_limit = 3
observe = "layer4"
max_ejected_percent = 50
eject_time = "60s"
[[pools.web.servers]]
name = "alive"
address = "127.0.0.1:{be.port}"
[[pools.web.servers]]
name = "dead"
address = "127.0.0.1:{dead}"
"""
    p, port = start_herder(tmp_path, cfg)
    try:
        for i in range(12):
            out = exchange(port, f"GET /{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
            assert out.startswith(b"HTTP/1.1 200"), out[:60]
        from herder.testing import http_json

        _, snap = http_json(f"http://127.0.0.1:{api}/status")
        dead_view = next(s for s in snap["pools"]["web"]["servers"] if s["name"] == "dead")
        assert dead_view["health"] == "down"
        assert dead_view["reason"].startswith("passive: 3 consecutive errors"), dead_view["reason"]
    finally:
        stop(p)
        be.shutdown()


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_slow_client_does_not_make_the_proxy_buffer_a_large_response(tmp_path):
    be = Recorder("big")
    cfg = f"""
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
[[pools.web.servers]]
name = "big"
address = "127.0.0.1:{be.port}"
"""
    p, port = start_herder(tmp_path, cfg.replace("[[pools", "[pools.web]\n[[pools", 1))
    try:
        before = _rss_kb(p.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            s.sendall(b"GET /huge HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(2.0)  # a client that does not read
            during = _rss_kb(p.pid)
            total = 0
            while total < (64 << 20):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
        assert total >= 64 << 20  # head + the whole body arrived
        assert during - before < 16 * 1024, f"proxy grew by {during - before} KiB while the client did not read"
    finally:
        stop(p)
        be.shutdown()


def test_websocket_upgrade_is_tunnelled(one_backend):
    be, port = one_backend
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while b"hello from b1\n" not in data:
            data += s.recv(4096)
        assert data.startswith(b"HTTP/1.1 101 ")
        assert b"\r\nUpgrade: websocket" in data
        for msg in (b"ping 1\n", b"ping 2\n"):
            s.sendall(msg)
            got = b""
            while not got.endswith(b"\n"):
                got += s.recv(4096)
            assert got == msg.upper()
    sent = be.requests()[-1]
    assert b"Upgrade: websocket" in sent and b"Connection: upgrade" in sent
