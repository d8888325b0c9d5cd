"""The lecture's haproxy.cfg, run as written (addresses changed), with four real backends.

`listen webfarm`, `balance roundrobin`, `cookie JSESSIONID prefix`, `option httpclose`,
`option forwardfor`, `option httpchk HEAD /index.html HTTP/1.0`, four `server ... cookie X
check` lines. The runtime API comes from a second (TOML) file given to the same `herder run`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from herder import proc
from herder.testing import free_port, http_json, wait_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("webA", "webB", "webC", "webD")


def raw_request(port: int, request: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send one request on a new connection; return (everything read, closed by peer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, True
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if b"Content-Length:" in head:
                n = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
                if len(body) >= n:
                    try:
                        s.settimeout(1.0)
                        more = s.recv(1)
                        return data + more, more == b""
                    except TimeoutError:
                        return data, False


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], bytes]:
    hdrs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    data, _ = raw_request(port, f"GET {path} HTTP/1.1\r\nHost: test\r\n{hdrs}\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    out: dict[str, list[str]] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        out.setdefault(k.strip().lower(), []).append(v.strip())
    return int(lines[0].split()[1]), out, body


@pytest.fixture(scope="module")
def webfarm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lecture")
    ports = {n: free_port() for n in NAMES}
    status_files = {n: tmp / f"{n}.status" for n in NAMES}
    backends = {}
    for n in NAMES:
        backends[n] = proc.spawn([proc.python_executable(), "-m", "herder.demo.backend", "--port", str(ports[n]),
                                  "--name", n, "--status-file", str(status_files[n])], name=n)
    lecture = (ROOT / "examples/lecture-haproxy.cfg").read_text()
    front = free_port()
    lecture = lecture.replace("127.0.0.1:18080", f"127.0.0.1:{front}")
    for i, n in enumerate(NAMES, 1):
        lecture = lecture.replace(f"127.0.0.1:1808{i}", f"127.0.0.1:{ports[n]}")
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(lecture)
    api = free_port()
    api_cfg = tmp / "api.toml"
    api_cfg.write_text(f'[api]\nlisten = "127.0.0.1:{api}"\n')
    log = open(tmp / "herder.log", "w+")
    herder = subprocess.Popen([proc.python_executable(), "-m", "herder", "run", str(cfg), str(api_cfg)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port("127.0.0.1", api)
        wait_port("127.0.0.1", front)  # the API may listen before the proxy does
        for n in NAMES:
            wait_port("127.0.0.1", ports[n])
        wait_health(api, {n: "up" for n in NAMES}, timeout=20)
        yield {"port": front, "api": api, "status": status_files, "log": log, "cfg": lecture}
    finally:
        herder.send_signal(signal.SIGTERM)
        try:
            herder.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(herder.pid, signal.SIGKILL)
            herder.wait()
        for b in backends.values():
            b.stop()
        log.close()


def health(api: int) -> dict[str, str]:
    _, snap = http_json(f"http://127.0.0.1:{api}/status")
    return {s["name"]: s["health"] for s in snap["pools"]["webfarm"]["servers"]}


def wait_health(api: int, want: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        h = health(api)
        if all(h.get(k) == v for k, v in want.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"health {h}, wanted {want}")
        time.sleep(0.1)


def test_round_robin_in_order(webfarm):
    served = [get(webfarm["port"])[1]["x-served-by"][0] for _ in range(8)]
    start = NAMES.index(served[0])
    assert served == [NAMES[(start + i) % 4] for i in range(8)]


def test_prefix_cookie_round_trip(webfarm):
    status, headers, _ = get(webfarm["port"], "/setcookie")
    assert status == 200
    server = headers["x-served-by"][0]
    letter = server[-1]
    assert headers["set-cookie"] == [f"JSESSIONID={letter}~xyz; path=/"]
    for _ in range(5):
        status, headers, body = get(webfarm["port"], "/echo", {"Cookie": f"other=1; JSESSIONID={letter}~xyz"})
        seen = json.loads(body)
        assert seen["name"] == server
        cookies = [v for k, v in seen["headers"] if k.lower() == "cookie"]
        assert cookies == ["other=1; JSESSIONID=xyz"]


def test_forwardfor_carries_the_client_address(webfarm):
    _, _, body = get(webfarm["port"], "/echo")
    xff = [v for k, v in json.loads(body)["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["127.0.0.1"]


def test_httpclose_closes_each_connection_after_its_response(webfarm):
    data, closed = raw_request(webfarm["port"], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200")
    assert b"\r\nConnection: close\r\n" in data.split(b"\r\n\r\n")[0] + b"\r\n"
    assert data.count(b"Connection:") == 1
    assert closed
    _, _, body = get(webfarm["port"], "/echo")
    conn = [v for k, v in json.loads(body)["headers"] if k.lower() == "connection"]
    assert conn == ["close"]


def test_server_failing_its_check_leaves_rotation_and_returns(webfarm):
    api, port = webfarm["api"], webfarm["port"]
    webfarm["status"]["webB"].write_text("500")
    try:
        wait_health(api, {"webB": "down"}, timeout=20)
        served = {get(port)[1]["x-served-by"][0] for _ in range(9)}
        assert served == {"webA", "webC", "webD"}
        webfarm["log"].flush()
        webfarm["log"].seek(0)
        assert "server webB is DOWN (L7 status 500)" in webfarm["log"].read()
    finally:
        webfarm["status"]["webB"].write_text("200")
    wait_health(api, {"webB": "up"}, timeout=20)
    served = {get(port)[1]["x-served-by"][0] for _ in range(8)}
    assert served == set(NAMES)


def test_lecture_config_needs_no_change_but_addresses():
    original = """listen webfarm 192.168.1.1:80
mode http
balance roundrobin
cookie JSESSIONID prefix
option httpclose
option forwardfor
option httpchk HEAD /index.html HTTP/1.0
server webA 192.168.1.11:80 cookie A check
server webB 192.168.1.12:80 cookie B check
server webC 192.168.1.13:80 cookie C check
server webD 192.168.1.14:80 cookie D check
"""
    ours = [ln for ln in (ROOT / "examples/lecture-haproxy.cfg").read_text().splitlines() if not ln.startswith("#")]
    import re

    def norm(s: str) -> str:
        return re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "ADDR", s)

    assert [norm(x) for x in ours] == [norm(x) for x in original.splitlines()]
