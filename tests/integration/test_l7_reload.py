"""SIGHUP applies HTTP service changes live: rules, pool proxy settings, new and removed
services, new listeners; connections already open carry on and see the change on their
next request."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from herder.testing import RecordingBackend, free_port, run_herder, wait_port
from herder.testing import stop_process as stop

pytestmark = pytest.mark.integration

BEFORE = """
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
[pools.web]
[[pools.web.servers]]
name = "b1"
address = "127.0.0.1:BE"
cookie = "A"
"""

AFTER = """
[services.www]
pool = "web"
listen = "127.0.0.1:PORT"
http_request = [{ action = "deny", status = 403, if = "is_secret" }]
[services.www.routing]
acl.is_secret = { criterion = "path_beg", values = ["/secret"] }
[services.extra]
pool = "web"
listen = "127.0.0.1:EXTRA"
[pools.web]
cookie = { name = "SRV", mode = "insert" }
[[pools.web.servers]]
name = "b1"
address = "127.0.0.1:BE"
cookie = "A"
"""


def _get(sock: socket.socket, path: str) -> bytes:
    """One request on an open keep-alive connection; the whole response (Content-Length)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed, got {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _until(what: str, fn, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_sighup_changes_http_services_live(tmp_path):
    be = RecordingBackend("b1")
    port, extra, moved = free_port(), free_port(), free_port()
    f = tmp_path / "l7.toml"

    def write(text: str, listen: int = port) -> None:
        f.write_text(text.replace("PORT", str(listen)).replace("EXTRA", str(extra)).replace("BE", str(be.port)))

    write(BEFORE)
    log = tmp_path / "herder.log"
    p = run_herder(str(f), log=open(log, "w"))
    try:
        wait_port("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            first = _get(c, "/secret")
            assert first.startswith(b"HTTP/1.1 200") and b"Set-Cookie" not in first
            assert not _listening(extra)

            write(AFTER)
            p.send_signal(signal.SIGHUP)
            _until("the new service to listen", lambda: _listening(extra))

            # the same connection, still open: the pool's new cookie setting applies...
            again = _get(c, "/page")
            assert again.startswith(b"HTTP/1.1 200") and b"Set-Cookie: SRV=A; path=/" in again
            # ...and so does the service's new rule (403 closes the connection)
            assert _get(c, "/secret/x").startswith(b"HTTP/1.1 403")
        with socket.create_connection(("127.0.0.1", extra), timeout=5) as c2:
            assert _get(c2, "/secret").startswith(b"HTTP/1.1 200")  # the rule is www's only

        # the new service goes away, www moves to another port
        write(BEFORE, listen=moved)
        p.send_signal(signal.SIGHUP)
        _until("www on its new port", lambda: _listening(moved))
        _until("the removed service to stop", lambda: not _listening(extra))
        assert not _listening(port)
        with socket.create_connection(("127.0.0.1", moved), timeout=5) as c3:
            assert b"Set-Cookie" not in _get(c3, "/secret")
        assert [r.split(b" ")[1] for r in be.requests()] == [b"/secret", b"/page", b"/secret", b"/secret"]
        text = log.read_text()
        assert f"http www on 127.0.0.1:{port} reconfigured" in text
        assert f"http extra on 127.0.0.1:{extra} started" in text and "stopped" in text
    finally:
        stop(p)
        be.shutdown()


def test_a_reload_names_the_service_changes_that_wait_for_a_restart(tmp_path, caplog):
    """A service change that no running component applies (here no L4 director runs: the
    runtime was not started) is named as needing a restart; an HTTP one is not named."""
    from herder.config import load_files
    from herder.runtime import Runtime

    cfg = """
[services.db]
mode = "tcp"
listen = "127.0.0.1:LPORT"
pool = "p"
[services.www]
pool = "p"
listen = "127.0.0.1:HPORT"
[pools.p]
[[pools.p.servers]]
name = "a"
address = "127.0.0.1:9"
"""
    f = tmp_path / "c.toml"
    f.write_text(cfg.replace("LPORT", "7001").replace("HPORT", "7002"))
    rt = Runtime(load_files([str(f)]))
    f.write_text(cfg.replace("LPORT", "7003").replace("HPORT", "7004"))
    with caplog.at_level("WARNING", logger="herder.runtime"):
        assert rt.reload()
    assert "service(s) db changed: a restart is needed for them to take effect" in caplog.text


def test_reloads_under_load_lose_no_request(tmp_path):
    """Four keep-alive clients send requests while the service's pool is reconfigured five
    times (its cookie setting flips, so its backend is retired each time): every request
    is answered 200, and the clients' connections survive."""
    import http.client
    import threading

    be = RecordingBackend("b1")
    port, extra = free_port(), free_port()
    f = tmp_path / "l7.toml"
    texts = [BEFORE, AFTER.replace('[services.extra]\npool = "web"\nlisten = "127.0.0.1:EXTRA"\n', "")]

    def write(i: int) -> None:
        f.write_text(texts[i % 2].replace("PORT", str(port)).replace("EXTRA", str(extra)).replace("BE", str(be.port)))

    write(0)
    p = run_herder(str(f), log=open(tmp_path / "herder.log", "w"))
    statuses: list[int] = []
    errors: list[str] = []
    stop_at = time.monotonic() + 20  # a bound, never reached unless something hangs
    done = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        n = 0
        while not done.is_set() and n < 2000 and time.monotonic() < stop_at:
            try:
                conn.request("GET", f"/load/{n}")
                r = conn.getresponse()
                r.read()
                statuses.append(r.status)
            except Exception as e:  # counted, not raised: the assertion below reports them
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            n += 1
        conn.close()

    try:
        wait_port("127.0.0.1", port)
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(1, 6):
            time.sleep(0.3)
            write(i)
            p.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        done.set()
        for t in threads:
            t.join(10)
        assert not errors, errors[:5]
        assert len(statuses) > 100 and set(statuses) == {200}
        assert (tmp_path / "herder.log").read_text().count("reconfigured") == 5
    finally:
        done.set()
        stop(p)
        be.shutdown()


def test_the_api_shows_each_service_and_server(tmp_path):
    """GET /l7: per service the connections and the proxy's own error answers, per server
    the requests it was sent (HAProxy's `show stat`, in short)."""
    from herder.testing import http_json

    b1, b2 = RecordingBackend("b1"), RecordingBackend("b2")
    port, api = free_port(), free_port()
    f = tmp_path / "l7.toml"
    f.write_text(f"""
[api]
listen = "127.0.0.1:{api}"
[services.www]
pool = "web"
listen = "127.0.0.1:{port}"
[pools.web]
[[pools.web.servers]]
name = "b1"
address = "127.0.0.1:{b1.port}"
[[pools.web.servers]]
name = "b2"
address = "127.0.0.1:{b2.port}"
maxconn = 10
""")
    p = run_herder(str(f), log=open(tmp_path / "herder.log", "w"))
    try:
        wait_port("127.0.0.1", port)
        wait_port("127.0.0.1", api)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            for i in range(5):
                assert _get(c, f"/{i}").startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400
            assert c.recv(100).startswith(b"HTTP/1.1 400")
        code, body = http_json(f"http://127.0.0.1:{api}/l7")
        assert code == 200
        (svc,) = body["services"]
        assert svc["service"] == "www" and svc["ports"] == [port] and svc["errors"] == {"400": 1}
        servers = {s["name"]: s for s in svc["pools"]["web"]["servers"]}
        assert servers["b1"]["requests"] + servers["b2"]["requests"] == 5
        assert {servers["b1"]["requests"], servers["b2"]["requests"]} == {2, 3}  # round robin
        assert servers["b2"]["maxconn"] == 10 and servers["b2"]["in_flight"] == 0  # counted: a maxconn
        assert servers["b1"]["idle_connections"] + servers["b2"]["idle_connections"] >= 1
    finally:
        stop(p)
        b1.shutdown()
        b2.shutdown()
