"""http-request rules, the per-source rate limit, and maxconn with a priority queue."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from herder import proc
from herder.testing import RecordingBackend, free_port, run_herder, wait_port
from herder.testing import stop_process as stop

pytestmark = pytest.mark.integration


def start(tmp_path, text: str, name: str = "cfg.toml") -> tuple[subprocess.Popen, int]:
    port = free_port()
    f = tmp_path / name
    f.write_text(text.replace("PORT", str(port)))
    check = subprocess.run([proc.python_executable(), "-m", "herder", "check", str(f)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    p = run_herder(str(f), log=open(tmp_path / "herder.log", "w"))
    wait_port("127.0.0.1", port)
    return p, port




def get(port: int, path: str, headers: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{headers}\r\n".encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture
def backend():
    be = RecordingBackend("b1")
    yield be
    be.shutdown()


NATIVE = """
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
http_request = [
  { action = "deny", status = 403, if = "is_admin" },
  { action = "redirect", location = "https://example.test", prefix = true, status = 301, if = "is_old" },
  { action = "set-header", name = "X-Via", value = "herder" },
  { action = "del-header", name = "X-Secret" },
]
[services.www.routing]
acl.is_admin = { criterion = "path_beg", values = ["/admin"] }
acl.is_old = { criterion = "path_beg", values = ["/old/"] }
[pools.web]
[[pools.web.servers]]
name = "b1"
address = "127.0.0.1:BE"
"""


def test_http_request_rules(tmp_path, backend):
    p, port = start(tmp_path, NATIVE.replace("BE", str(backend.port)))
    try:
        assert get(port, "/admin/x").startswith(b"HTTP/1.1 403 ")
        out = get(port, "/old/page?q=1")
        assert out.startswith(b"HTTP/1.1 301 ") and b"\r\nLocation: https://example.test/old/page?q=1\r\n" in out
        assert get(port, "/ok", "X-Secret: s\r\nX-Via: client\r\n").startswith(b"HTTP/1.1 200")
        heads = backend.requests()
        assert len(heads) == 1
        assert b"\r\nX-Via: herder" in heads[0] and b"X-Via: client" not in heads[0] and b"X-Secret" not in heads[0]
    finally:
        stop(p)


def test_rules_naming_an_unknown_acl_are_a_config_error(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(NATIVE.replace('if = "is_admin"', 'if = "is_admn"').replace("BE", "80").replace("PORT", "81"))
    r = subprocess.run([proc.python_executable(), "-m", "herder", "check", str(f)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{f}:6: services.www.http_request[0].if: unknown ACL 'is_admn'" in r.stderr


def test_rate_limit_by_source_in_haproxy_syntax(tmp_path, backend):
    cfg = f"""
frontend fe
    bind 127.0.0.1:PORT
    stick-table type ip size 100k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 5 }}
    default_backend be
backend be
    server b1 127.0.0.1:{backend.port}
"""
    p, port = start(tmp_path, cfg, "haproxy.cfg")
    try:
        codes = [int(get(port, f"/{i}").split(b" ")[1]) for i in range(8)]
        assert codes == [200] * 5 + [429] * 3
        assert len(backend.requests()) == 5
    finally:
        stop(p)


def test_maxconn_queues_extra_requests_serves_high_priority_first_and_loses_none(tmp_path, backend):
    cfg = f"""
frontend fe
    bind 127.0.0.1:PORT
    acl urgent hdr(x-prio) high
    http-request set-priority-class -10 if urgent
    default_backend be
backend be
    timeout queue 10s
    server b1 127.0.0.1:{backend.port} maxconn 2
"""
    p, port = start(tmp_path, cfg, "haproxy.cfg")
    try:
        results: dict[str, bytes] = {}

        def one(tag: str, prio: str) -> None:
            results[tag] = get(port, f"/hold/{tag}", f"X-Prio: {prio}\r\n" if prio else "")

        threads = [threading.Thread(target=one, args=(f"first{i}", "")) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.15)  # both slots taken
        later = [threading.Thread(target=one, args=(f"low{i}", "low")) for i in range(3)]
        for t in later:
            t.start()
            time.sleep(0.03)
        time.sleep(0.05)
        urgent = [threading.Thread(target=one, args=(f"high{i}", "high")) for i in range(2)]
        for t in urgent:
            t.start()
            time.sleep(0.03)
        for t in threads + later + urgent:
            t.join(20)
        assert len(results) == 7 and all(r.startswith(b"HTTP/1.1 200") for r in results.values())
        assert backend.max_concurrent == 2
        order = [h.split(b" ")[1].decode().rsplit("/", 1)[1] for h in backend.requests()]
        assert set(order[:2]) == {"first0", "first1"}
        assert set(order[2:4]) == {"high0", "high1"}, order
        assert set(order[4:]) == {"low0", "low1", "low2"}
    finally:
        stop(p)


def test_queue_timeout_gives_503(tmp_path, backend):
    cfg = f"""
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
[pools.web]
timeout_queue = "0.3s"
[[pools.web.servers]]
name = "b1"
address = "127.0.0.1:{backend.port}"
maxconn = 1
"""
    p, port = start(tmp_path, cfg)
    try:
        out: list[bytes] = []
        t = threading.Thread(target=lambda: out.append(get(port, "/slow")))
        t.start()
        time.sleep(0.2)
        assert get(port, "/x").startswith(b"HTTP/1.1 503 ")
        t.join(10)
    finally:
        stop(p)


def test_cache_hit_is_served_without_contacting_the_server(tmp_path, backend):
    cfg = f"""
cache small
    total-max-size 4
    max-object-size 100000
    max-age 240
frontend fe
    bind 127.0.0.1:PORT
    default_backend be
backend be
    http-request cache-use small
    http-response cache-store small
    server b1 127.0.0.1:{backend.port}
"""
    p, port = start(tmp_path, cfg, "haproxy.cfg")
    try:
        first = get(port, "/cacheable")
        assert first.startswith(b"HTTP/1.1 200") and b"Age:" not in first
        again = [get(port, "/cacheable") for _ in range(5)]
        assert all(a.startswith(b"HTTP/1.1 200") and b"\r\nAge: " in a for a in again)
        assert all(a.endswith(first.split(b"\r\n\r\n", 1)[1]) for a in again)
        assert len(backend.requests()) == 1, "hits never reach the server"
        # Vary: another language is another entry
        get(port, "/cacheable", "Accept-Language: fr\r\n")
        get(port, "/cacheable", "Accept-Language: fr\r\n")
        assert len(backend.requests()) == 2
        # the client asks for a fresh answer; private and no-store responses are never stored
        get(port, "/cacheable", "Cache-Control: no-cache\r\n")
        for _ in range(2):
            get(port, "/cacheable?cc=private")
            get(port, "/cacheable?cc=no-store")
        assert len(backend.requests()) == 7
    finally:
        stop(p)


def test_service_maxconn_holds_extra_connections_until_a_slot_frees(tmp_path, backend):
    cfg = f"""
frontend fe
    bind 127.0.0.1:PORT
    maxconn 2
    default_backend be
backend be
    server b1 127.0.0.1:{backend.port}
"""
    p, port = start(tmp_path, cfg, "haproxy.cfg")
    try:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        for h in held:
            h.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            assert h.recv(4096).startswith(b"HTTP/1.1 200")
        third = socket.create_connection(("127.0.0.1", port), timeout=5)
        third.sendall(b"GET /third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):
            third.recv(4096)  # not served while two connections are open
        assert [h.split(b" ")[1] for h in backend.requests()] == [b"/first", b"/first"]
        held[0].close()
        third.settimeout(5)
        assert third.recv(4096).startswith(b"HTTP/1.1 200")
        third.close()
        held[1].close()
    finally:
        stop(p)


def test_insert_and_rewrite_cookie_modes(tmp_path):
    a, b = RecordingBackend("a"), RecordingBackend("b")
    cfg = f"""
listen ins
    bind 127.0.0.1:PORT
    cookie SRV insert indirect nocache
    server a 127.0.0.1:{a.port} cookie A
    server b 127.0.0.1:{b.port} cookie B
"""
    p, port = start(tmp_path, cfg, "haproxy.cfg")
    try:
        first = get(port, "/x")
        served = first.split(b"X-Served-By: ")[1][:1].upper()
        assert f"\r\nSet-Cookie: SRV={served.decode()}; path=/\r\n".encode() in first
        assert b"\r\nCache-Control: private\r\n" in first
        for _ in range(4):
            again = get(port, "/y", f"Cookie: SRV={served.decode()}\r\n")
            assert again.split(b"X-Served-By: ")[1][:1].upper() == served
            assert b"Set-Cookie" not in again  # the client already has it
        # indirect: the servers never see the persistence cookie
        assert all(b"SRV=" not in h for h in a.requests() + b.requests())
    finally:
        stop(p)
    port2 = free_port()
    (tmp_path / "rw.cfg").write_text(f"""
listen rw
    bind 127.0.0.1:{port2}
    cookie SID rewrite
    server a 127.0.0.1:{a.port} cookie A
""")
    p2 = run_herder(str(tmp_path / "rw.cfg"))
    try:
        wait_port("127.0.0.1", port2)
        out = get(port2, "/setcookie/SID")
        assert b"\r\nSet-Cookie: SID=A; path=/\r\n" in out  # the server's value became the server's id
        again = get(port2, "/z", "Cookie: SID=A\r\n")
        assert again.startswith(b"HTTP/1.1 200")
    finally:
        stop(p2)
        a.shutdown()
        b.shutdown()
