"""L7 HTTP proxy: herder vs haproxy and nginx, same backends, same work, same run.

Method (../shared/notes/perf-anchors.md): three nginx ``return 200`` backends and wrk on
core 0; the proxies on core 1, one loaded at a time, their runs interleaved. Each proxy does the lecture-style work:
round robin, X-Forwarded-For, cookie insert (indirect, nocache), health checks (haproxy
``check``, herder ``http`` checks; nginx OSS has none). For each proxy and mode
(keep-alive, ``Connection: close``) the median of N wrk runs is taken, with the proxy's CPU
time from /proc, so that "per-core capacity" (req/s divided by the share of a core the
proxy used) can be compared when core 0 is the limit rather than the proxy.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Row, children, cpu_seconds, pin, require_free_ports
from herder import proc

DESCRIPTION = "L7 proxy req/s and per-core capacity vs haproxy and nginx (wrk, keep-alive and close)"

BACKEND_PORTS = (18181, 18182, 18183)
PORTS = {"haproxy": 18110, "nginx": 18111, "herder": 18112}


def _wait(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _wrk(port: int, seconds: int, close: bool) -> tuple[float, float, float]:
    argv = ["taskset", "-c", "0", "wrk", "-t1", "-c64", f"-d{seconds}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run([*argv, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    return rps, pct("50"), pct("99")


def _configs(d: Path) -> None:
    be = "\n".join(f"  server {{ listen 127.0.0.1:{p} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }}"
                   for p in BACKEND_PORTS)
    (d / "backends.conf").write_text(f"""worker_processes 1; daemon off; pid {d}/be.pid; error_log {d}/be.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
{be}
}}
""")
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p} cookie {c} check inter 2s"
                        for i, (p, c) in enumerate(zip(BACKEND_PORTS, "ABC", strict=True), 1))
    (d / "haproxy.cfg").write_text(f"""global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:{PORTS['haproxy']}
    default_backend be
backend be
    balance roundrobin
    option forwardfor
    option httpchk GET /
    cookie SRV insert indirect nocache
{servers}
""")
    ups = " ".join(f"server 127.0.0.1:{p};" for p in BACKEND_PORTS)
    (d / "nginx.conf").write_text(f"""worker_processes 1; daemon off; pid {d}/rp.pid; error_log {d}/rp.err;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream be {{ {ups} keepalive 64; }}
  server {{ listen 127.0.0.1:{PORTS['nginx']} backlog=4096;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header Host $host; }} }} }}
""")
    hs = "".join(f'[[pools.be.servers]]\nname = "s{i}"\naddress = "127.0.0.1:{p}"\ncookie = "{c}"\n'
                 for i, (p, c) in enumerate(zip(BACKEND_PORTS, "ABC", strict=True), 1))
    (d / "herder.toml").write_text(f"""[herder]
log_level = "warning"
[services.fe]
pool = "be"
listen = "127.0.0.1:{PORTS['herder']}"
forwardfor = true
[pools.be]
balance = "roundrobin"
initial_state = "up"
cookie = {{ name = "SRV", mode = "insert", indirect = true, nocache = true }}
[[pools.be.checks]]
type = "http"
path = "/"
inter = "2s"
{hs}""")


def run(quick: bool) -> list[Row]:
    for tool in ("wrk", "nginx", "haproxy", "taskset"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (make system installs it)")
    seconds, repeats = (3, 1) if quick else (10, 3)
    require_free_ports(*BACKEND_PORTS, *PORTS.values())
    d = Path(tempfile.mkdtemp(prefix="herder-bench-l7-"))
    _configs(d)
    started: list[proc.Child] = []
    try:
        backends = proc.spawn(["nginx", "-c", str(d / "backends.conf"), "-p", str(d)], name="nginx-backends")
        started.append(backends)
        pin(backends.pid, 0)
        for p in BACKEND_PORTS:
            _wait(p)
        proxies = {
            "haproxy": ["haproxy", "-f", str(d / "haproxy.cfg")],
            "nginx": ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)],
            "herder": [proc.python_executable(), "-m", "herder", "run", str(d / "herder.toml")],
        }
        # All three run at once (idle but for their health checks) and their runs are
        # interleaved, so that a change in the machine's load during the benchmark hits
        # each of them alike instead of whichever ran last.
        kids: dict[str, proc.Child] = {}
        for name, argv in proxies.items():
            kids[name] = child = proc.spawn(["taskset", "-c", "1", *argv], name=name)
            started.append(child)
        for name in proxies:
            _wait(PORTS[name])
        time.sleep(0.5)
        for name in proxies:
            _wrk(PORTS[name], 1, False)  # warm-up
        samples: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        for _ in range(repeats):
            for mode in ("keep-alive", "close"):
                for name, child in kids.items():
                    pids = [child.pid, *children(child.pid)]
                    c0 = sum(cpu_seconds(p) for p in pids)
                    t0 = time.monotonic()
                    rps, p50, p99 = _wrk(PORTS[name], seconds, mode == "close")
                    wall = time.monotonic() - t0
                    cpu = sum(cpu_seconds(p) for p in pids) - c0
                    samples.setdefault((name, mode), []).append((rps, p50, p99, cpu / wall if wall else 0.0))
        results = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        rows = []
        for mode in ("keep-alive", "close"):
            h = results[("herder", mode)]
            for anchor in ("haproxy", "nginx"):
                a = results[(anchor, mode)]
                rows.append(Row(f"{mode}: req/s", "req/s", h[0], a[0], anchor,
                                note=f"p50 {h[1]:.2f}/{a[1]:.2f} ms, p99 {h[2]:.2f}/{a[2]:.2f} ms"))
                hc = h[0] / h[3] if h[3] > 0.05 else None
                ac = a[0] / a[3] if a[3] > 0.05 else None
                if hc and ac:
                    rows.append(Row(f"{mode}: per-core capacity", "req/s/core", hc, ac, anchor,
                                    note=f"cpu share {h[3]:.0%} vs {a[3]:.0%}"))
        return rows
    finally:
        for c in reversed(started):
            c.stop()
        shutil.rmtree(d, ignore_errors=True)
