"""Health checks: herder vs haproxy running the same checks against the same backends.

Method (as bench_l7 and ../shared/notes/perf-anchors.md): one nginx worker on core 0
serves ten ``return 200`` ports (the servers being checked); the checker under test runs
alone on core 1, ``herder run`` with a generated TOML file or ``haproxy`` (``nbthread 1``)
with the equivalent backend. Both do the same checks: TCP connect, or ``GET / HTTP/1.0``
expecting a 2xx/3xx status, with rise 2 / fall 3.

Counting checks: every check opens one TCP connection, so checks are counted as the
kernel's ``Tcp: ActiveOpens`` (SYNs sent) of a private network namespace that holds only
nginx and the checker (as root; loopback inside it). The backend cannot count them:
haproxy's pure TCP check never completes the handshake (it delays the final ACK and
resets), so nginx never accepts those connections. Without root the main namespace's
counter is used and the rows say so (other traffic on the machine then counts too).

* **Checks per second on one core, 500 servers.** ``inter`` is 1 ms, far more than
  either checker can do, so each runs flat out. The checker's CPU time comes from /proc,
  and "per-core capacity" = checks/s / CPU share, the number to compare when core 0
  (nginx) rather than the checker is the limit.
* **CPU share of 200 servers at 1 s.** ``inter`` is 1 s; the row is the share of one
  core the checker used over the window (lower is better). The note gives the observed
  checks/s, which should be about 200 for both.

The ratio is herder / haproxy. Absolute numbers depend on the machine; the ratio is what
this benchmark is for.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import Row, children, cpu_seconds, pin, require_free_ports
from herder import proc

DESCRIPTION = "health checks: checks/s on one core (500 servers, TCP and HTTP) and CPU share of 200 servers @1s, vs haproxy"

BACKEND_PORTS = tuple(range(18281, 18291))
#: haproxy will not start without a listener; this idle frontend is only there for that.
HAPROXY_IDLE_PORT = 18279




def _listening(pid: int, ports: tuple[int, ...], timeout: float = 10.0) -> None:
    """Wait until ``ports`` are listening in the network namespace of ``pid``."""
    want = {f"{p:04X}" for p in ports}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
        except OSError:
            lines = []
        have = {ln.split()[1].split(":")[1] for ln in lines if ln.split()[3] == "0A"}  # 0A: LISTEN
        if want <= have:
            return
        time.sleep(0.05)
    raise RuntimeError(f"ports {ports} not listening")


def _active_opens(pid: int) -> int:
    """TCP connections opened so far in the network namespace of ``pid``."""
    lines = [ln.split() for ln in Path(f"/proc/{pid}/net/snmp").read_text().splitlines() if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("ActiveOpens")])


def _make_netns() -> str | None:
    """A private network namespace with lo up, or None (not root, or no iproute2)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return None
    name = f"herder-bench-health-{os.getpid()}"
    if proc.run_sync(["ip", "netns", "add", name], timeout=10).returncode != 0:
        return None
    proc.run_sync(["ip", "-n", name, "link", "set", "lo", "up"], timeout=10)
    return name


def _backend_conf(d: Path) -> None:
    servers = "\n".join(f'  server {{ listen 127.0.0.1:{p} backlog=8192; location / {{ return 200 "ok\\n"; }} }}'
                        for p in BACKEND_PORTS)
    (d / "backends.conf").write_text(f"""worker_processes 1; daemon off; pid {d}/be.pid; error_log {d}/be.err;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{ access_log off;
{servers}
}}
""")


def _herder_conf(d: Path, kind: str, n: int, inter: str) -> Path:
    check = 'type = "http"\npath = "/"\nversion = "1.0"\n' if kind == "http" else 'type = "tcp"\n'
    servers = "".join(f'[[pools.p.servers]]\nname = "s{i}"\naddress = "127.0.0.1:{BACKEND_PORTS[i % len(BACKEND_PORTS)]}"\n'
                      for i in range(n))
    path = d / f"herder-{kind}-{n}.toml"
    path.write_text(f"""[herder]
log_level = "warning"
[pools.p]
initial_state = "up"
[[pools.p.checks]]
{check}inter = "{inter}"
timeout = "1s"
rise = 2
fall = 3
{servers}""")
    return path


def _haproxy_conf(d: Path, kind: str, n: int, inter: str) -> Path:
    servers = "\n".join(f"    server s{i} 127.0.0.1:{BACKEND_PORTS[i % len(BACKEND_PORTS)]} check" for i in range(n))
    httpchk = "    option httpchk GET /\n" if kind == "http" else ""
    path = d / f"haproxy-{kind}-{n}.cfg"
    path.write_text(f"""global
    nbthread 1
    maxconn 4000
defaults
    mode {"http" if kind == "http" else "tcp"}
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check 1s
frontend idle
    bind 127.0.0.1:{HAPROXY_IDLE_PORT}
    default_backend pool
backend pool
{httpchk}    default-server inter {inter} fastinter {inter} downinter {inter} rise 2 fall 3
{servers}
""")
    return path


def _measure(argv: list[str], netns: str | None, warmup: float, seconds: float) -> tuple[float, float]:
    """Run a checker on core 1; returns (checks/s, CPU share) over ``seconds`` after ``warmup``."""
    child = proc.spawn(["taskset", "-c", "1", *argv], name=os.path.basename(argv[0]), netns=netns)
    try:
        time.sleep(warmup)
        if not child.alive():
            raise RuntimeError(f"{argv[0]} exited with status {child.returncode}")
        a0, c0, t0 = _active_opens(child.pid), cpu_seconds(child.pid), time.monotonic()
        time.sleep(seconds)
        a1, c1, t1 = _active_opens(child.pid), cpu_seconds(child.pid), time.monotonic()
        if not child.alive():
            raise RuntimeError(f"{argv[0]} exited with status {child.returncode}")
    finally:
        child.stop()
    wall = t1 - t0
    return (a1 - a0) / wall, (c1 - c0) / wall


def run(quick: bool) -> list[Row]:
    for tool in ("nginx", "haproxy", "taskset"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (make system installs it)")
    flat_s, share_s = (3.0, 5.0) if quick else (8.0, 20.0)
    require_free_ports(*BACKEND_PORTS, HAPROXY_IDLE_PORT)
    d = Path(tempfile.mkdtemp(prefix="herder-bench-health-"))
    _backend_conf(d)
    started: list[proc.Child] = []
    netns = _make_netns()
    shared = "" if netns else "; shared netns: other traffic counts too"
    try:
        backends = proc.spawn(["nginx", "-c", str(d / "backends.conf"), "-p", str(d)], name="nginx-backends",
                              netns=netns)
        started.append(backends)
        pin(backends.pid, 0)
        _listening(backends.pid, BACKEND_PORTS)
        for pid in children(backends.pid):
            pin(pid, 0)
        herder = [proc.python_executable(), "-m", "herder", "run"]
        rows: list[Row] = []
        for kind in ("tcp", "http"):
            h = _measure([*herder, str(_herder_conf(d, kind, 500, "1ms"))], netns, 2.5, flat_s)
            a = _measure(["haproxy", "-f", str(_haproxy_conf(d, kind, 500, "1ms"))], netns, 1.0, flat_s)
            label = kind.upper()
            rows.append(Row(f"{label}, 500 servers: checks/s", "checks/s", h[0], a[0], "haproxy",
                            note=f"checker cpu {h[1]:.0%} vs {a[1]:.0%}{shared}"))
            if h[1] > 0.05 and a[1] > 0.05:
                rows.append(Row(f"{label}, 500 servers: per-core capacity", "checks/s/core", h[0] / h[1],
                                a[0] / a[1], "haproxy", note="checks/s / cpu share"))
        for kind in ("tcp", "http"):
            h = _measure([*herder, str(_herder_conf(d, kind, 200, "1s"))], netns, 3.0, share_s)
            a = _measure(["haproxy", "-f", str(_haproxy_conf(d, kind, 200, "1s"))], netns, 2.0, share_s)
            rows.append(Row(f"{kind.upper()}, 200 servers @1s: cpu share", "% of a core", h[1] * 100, a[1] * 100,
                            "haproxy", higher_is_better=False,
                            note=f"observed {h[0]:.0f} vs {a[0]:.0f} checks/s{shared}"))
        return rows
    finally:
        for c in reversed(started):
            c.stop()
        if netns:
            proc.run_sync(["ip", "netns", "del", netns], timeout=10)
        shutil.rmtree(d, ignore_errors=True)
