"""The haproxy.cfg importer: what it maps, what it refuses (with the line), checks per server."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from herder import proc
from herder.config import ConfigErrors
from herder.config.load import load_strings
from herder.testing import free_port, http_json, wait_port

pytestmark = pytest.mark.integration


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as ei:
        load_strings([("h.cfg", text)])
    return [str(e) for e in ei.value.errors]


def test_maps_sections_onto_the_model():
    cfg = load_strings([("h.cfg", """
global
    daemon
    maxconn 100
defaults
    mode http
    timeout connect 3s
    timeout server 40000
    option forwardfor
frontend fe
    bind *:8080
    acl is_api path_beg /api
    use_backend api if is_api
    default_backend web
backend web
    balance leastconn
    cookie SRV insert indirect nocache
    option httpchk GET /health
    http-check expect status 204
    default-server inter 1s rise 3 fall 2
    server w1 10.1.1.1:80 check cookie a weight 5
    server w2 10.1.1.2 check backup
backend api
    balance uri depth 2
    hash-type consistent
    server a1 10.1.2.1:8000
""")])
    fe = cfg.services["fe"]
    assert fe.pool == "web" and str(fe.listen[0]) == "0.0.0.0:8080"
    assert fe.settings["routing"].pools == ("api",)
    web = cfg.pools["web"]
    assert web.balance == "leastconn"
    assert web.settings["timeout_connect"] == 3.0 and web.settings["timeout_server"] == 40.0
    assert web.settings["cookie"] == {"name": "SRV", "mode": "insert", "indirect": True, "nocache": True}
    (check,) = web.checks
    assert (check["type"], check["method"], check["path"], check["inter"], check["rise"], check["fall"]) == (
        "http", "GET", "/health", 1.0, 3, 2)
    assert check["expect_status"] is not None
    w1, w2 = web.servers
    assert (w1.weight, w1.meta["cookie"], w2.backup, w2.address.port) == (5, "a", True, 80)
    api = cfg.pools["api"]
    assert api.balance_options == {"depth": 2, "hash_type": "consistent"}
    assert api.servers[0].meta["check"] is False


@pytest.mark.parametrize(("text", "expected"), [
    ("listen x 127.0.0.1:80\n  option splice-auto\n", "h.cfg:2: option splice-auto: unsupported option 'splice-auto'"),
    ("listen x 127.0.0.1:80\n  server a 1.2.3.4:80 ssl\n", "h.cfg:2: server: unsupported server parameter 'ssl'"),
    ("global\n  lua-load x.lua\n", "h.cfg:2: lua-load: unsupported global keyword"),
    ("listen x 127.0.0.1:80\n  use_backend y if nope\n", "h.cfg:2: use_backend: unknown ACL 'nope'"),
    ("listen x 127.0.0.1:80\n  mode tcp\n  balance uri\n  server a 1.2.3.4:80\n",
     "h.cfg:3: balance: x: balance uri in mode tcp is not supported yet"),
    ("listen x 127.0.0.1:80\n  mode tcp\n  option forwardfor\n  server a 1.2.3.4:80\n",
     "h.cfg:1: listen: x: option forwardfor need(s) mode http"),
    ("frontend f\n  default_backend b\n", "h.cfg:1: frontend: f: no bind address"),
    ("frontend f\n  bind :80\n  default_backend missing\n", "h.cfg:3: services.f.pool: service 'f' names pool 'missing'"),
    ("backend b\n  balance roundrobinn\n", "h.cfg:2: balance: unknown balance algorithm 'roundrobinn'"),
    ("backend b\n  timeout server abc\n", "h.cfg:2: timeout server: bad duration 'abc'"),
    ("  server a 1.2.3.4\n", "h.cfg:1: server: keyword outside of any section"),
])
def test_unsupported_or_wrong_keywords_name_their_line(text, expected):
    errs = errors(text)
    assert any(e.startswith(expected) for e in errs), errs


def test_server_without_check_is_up_and_never_checked(tmp_path):
    port, api = free_port(), free_port()
    dead1, dead2 = free_port(), free_port()
    (tmp_path / "h.cfg").write_text(f"""
listen web 127.0.0.1:{port}
    server checked 127.0.0.1:{dead1} check inter 200 fall 1 rise 1
    server unchecked 127.0.0.1:{dead2}
""")
    (tmp_path / "api.toml").write_text(f'[api]\nlisten = "127.0.0.1:{api}"\n')
    p = subprocess.Popen([proc.python_executable(), "-m", "herder", "run", str(tmp_path / "h.cfg"),
                          str(tmp_path / "api.toml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        wait_port("127.0.0.1", api)
        time.sleep(1.0)
        _, snap = http_json(f"http://127.0.0.1:{api}/status")
        servers = {s["name"]: (s["health"], s["reason"]) for s in snap["pools"]["web"]["servers"]}
        assert servers["unchecked"] == ("up", "no check configured")
        assert servers["checked"][0] == "down" and servers["checked"][1].startswith("L4 ")
        _, health = http_json(f"http://127.0.0.1:{api}/health")
        assert "unchecked" not in str(health)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(5)


def test_mode_tcp_runs_on_the_l4_relay(tmp_path):
    from herder.testing import RecordingBackend, run_herder, stop_process

    a, b = RecordingBackend("a"), RecordingBackend("b")
    port = free_port()
    (tmp_path / "tcp.cfg").write_text(f"""
listen db
    mode tcp
    bind 127.0.0.1:{port}
    balance roundrobin
    server a 127.0.0.1:{a.port} check inter 500
    server b 127.0.0.1:{b.port} check inter 500 weight 2
""")
    p = run_herder(str(tmp_path / "tcp.cfg"), log=open(tmp_path / "log", "w"))
    try:
        wait_port("127.0.0.1", port)
        import socket

        seen = []
        deadline = time.monotonic() + 10
        while len(seen) < 30 and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                out = b""
                while chunk := s.recv(4096):
                    out += chunk
            if out:
                seen.append(out.split(b"\r\n\r\n", 1)[1].split(b" ")[0])
        assert len(seen) == 30
        assert seen.count(b"a") == 10 and seen.count(b"b") == 20
        # bytes are relayed as they are: no X-Forwarded-For, no rewritten head
        assert all(b"X-Forwarded-For" not in h for h in a.requests() + b.requests())
    finally:
        stop_process(p)
        a.shutdown()
        b.shutdown()
