"""`herder demo`: serves curl, shows the pool state reacting, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from herder import proc
from herder.testing import descendants, free_port, http_json, pid_alive, session_members, wait_port

pytestmark = pytest.mark.integration


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def ports() -> dict[str, int]:
    """Three consecutive free ports for the backends, and two more."""
    for _ in range(50):
        base = free_port()
        if base < 65000 and all(_bindable(base + i) for i in range(3)):
            break
    api, proxy = free_port(), free_port()
    assert len({base, base + 1, base + 2, api, proxy}) == 5
    return {"base": base, "api": api, "proxy": proxy}


def start(p: dict[str, int], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [proc.python_executable(), "-m", "herder", "demo", "--base-port", str(p["base"]), "--api-port", str(p["api"]),
         "--proxy-port", str(p["proxy"]), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_demo_serves_curl_and_stops_on_sigterm_leaving_nothing():
    p = ports()
    demo = start(p)
    try:
        wait_port("127.0.0.1", p["proxy"], timeout=15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            _, snap = http_json(f"http://127.0.0.1:{p['api']}/status")
            if all(s["health"] == "up" for s in snap["pools"]["demo"]["servers"]):
                break
            time.sleep(0.2)
        seen = set()
        for _ in range(6):
            r = subprocess.run(["curl", "-s", f"http://127.0.0.1:{p['proxy']}/"], capture_output=True, text=True,
                               timeout=10)
            seen.add(r.stdout.strip())
        assert seen == {"web1", "web2", "web3"}
        children = descendants(demo.pid)
        assert len(children) >= 3, "the three backends are child processes"
        t0 = time.monotonic()
        demo.send_signal(signal.SIGTERM)
        rc = demo.wait(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert rc == 0, demo.stderr.read()
    assert elapsed < 2.0
    assert not any(pid_alive(c) for c in children)
    assert session_members(demo.pid) == set()


def test_demo_script_shows_the_pool_state_reacting():
    p = ports()
    demo = start(p, "--script", "--duration", "14")
    out, err = demo.communicate(timeout=40)
    assert demo.returncode == 0, err
    down = err.find("server web2 is DOWN (L4 connection refused)")
    if down < 0:
        down = err.find("server web2 is DOWN")
    up = err.find("server web2 is UP", down)
    assert down > 0 and up > down, err
    assert "demo backend web2 stopped" in err and "herder stopped" in err
