"""Authoritative DNS: herder vs gdnsd, same zone, same machine, same run.

Method (../shared/notes/perf-anchors.md section 3): dnsperf pinned to core 0
(``-c 4``, default 100 outstanding queries, no rate cap) against one server pinned to core 1
(``taskset -c 1``). Two cases, each a query file of 1000 identical queries:

* **static A** -- ``www.example.test A``, three A records from the zone;
* **ECS-mapped A** -- ``geo.example.test A`` with an EDNS Client Subnet option
  (198.18.1.0/24, ``dnsperf -E 8:...``): gdnsd's geoip plugin with a ``nets`` map, herder's
  ``[dns.names]`` geolocation policy over a pool with servers in two regions.

herder runs twice: UDP on the event loop (``udp_io = "loop"``, the default) and on a
blocking socket in its own thread (``udp_io = "thread"``).

Each cell is the median of N runs. Besides queries/s, the server's CPU time (utime +
stime, all threads, from /proc) gives its **per-core capacity** = qps / share of a core
used: on a 2-core machine dnsperf on core 0 is often the limit, not the server, and then
raw qps says little while capacity still compares the servers. The answers are checked
with dig before measuring.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row
from herder import proc

DESCRIPTION = "authoritative DNS qps and per-core capacity vs gdnsd (dnsperf; static A, ECS-mapped A)"

ZONE = """\
$ORIGIN example.test.
$TTL 300
@   IN SOA ns1 hostmaster 1 3600 600 86400 60
@   IN NS  ns1
ns1 IN A   127.0.0.1
www IN A   10.0.0.1
www IN A   10.0.0.2
www IN A   10.0.0.3
"""

GDNSD_CONFIG = """\
options => {{
  listen => [ 127.0.0.1:{port} ]
  udp_threads => 1
  tcp_threads => 1
  run_dir => {d}/run
  state_dir => {d}/state
}}
plugins => {{
  geoip => {{
    maps => {{
      regmap => {{
        datacenters => [ eu, us ]
        nets => {{
          198.18.1.0/24 => [ eu ]
          198.18.2.0/24 => [ us ]
        }}
      }}
    }}
    resources => {{
      geo => {{
        map => regmap
        dcmap => {{ eu => 198.18.1.11, us => 198.18.2.11 }}
      }}
    }}
  }}
}}
"""

HERDER_CONFIG = """\
[herder]
log_level = "warning"
[regions.eu]
prefixes = ["198.18.1.0/24"]
[regions.us]
prefixes = ["198.18.2.0/24"]
[pools.web]
servers = [
  {{ name = "eu1", address = "198.18.1.11:80", region = "eu" }},
  {{ name = "us1", address = "198.18.2.11:80", region = "us" }},
]
[dns]
listen = "127.0.0.1:{port}"
default_region = "us"
udp_io = "{udp_io}"
[dns.zones."example.test"]
file = "{zone}"
[dns.names."geo.example.test"]
pool = "web"
policy = "geolocation"
"""

#: ECS option (code 8): family 1, source /24, scope 0, 198.18.1 -- as dnsperf -E wants it.
ECS_HEX = "8:00011800c61201"


def _free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads) in seconds; 0 when it is gone."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = st[st.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _wait_tcp(port: int, child: proc.Child, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with status {child.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{child.name}: nothing listening on {port}")


def _dig(port: int, name: str, *extra: str) -> list[str]:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=2", "+tries=2", *extra, name, "A"],
                         capture_output=True, text=True, timeout=20).stdout
    return sorted(out.split())


def _dnsperf(port: int, qfile: Path, seconds: int, extra: list[str]) -> tuple[float, float]:
    """(queries per second, lost fraction) of one dnsperf run pinned to core 0."""
    cpus = os.cpu_count() or 1
    pin = ["taskset", "-c", "0"] if cpus > 1 else []
    out = subprocess.run([*pin, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-l", str(seconds), "-c", "4",
                          "-d", str(qfile), *extra], capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out)
    if not m:
        raise RuntimeError(f"dnsperf printed no rate:\n{out[-1500:]}")
    return float(m.group(1)), float(lost.group(1)) / 100 if lost else 0.0


def _measure(child: proc.Child, port: int, qfile: Path, seconds: int, runs: int,
             extra: list[str]) -> tuple[float, float, float]:
    """Median qps, median per-core capacity, max lost fraction."""
    qps, cap, lost = [], [], []
    for _ in range(runs):
        c0, t0 = _cpu_seconds(child.pid), time.monotonic()
        q, lo = _dnsperf(port, qfile, seconds, extra)
        used = (_cpu_seconds(child.pid) - c0) / (time.monotonic() - t0)
        qps.append(q)
        lost.append(lo)
        cap.append(q / used if used > 0.05 else float("nan"))
    return statistics.median(qps), statistics.median(cap), max(lost)


def _start(name: str, argv: list[str], log: Path, cwd: Path) -> proc.Child:
    pin = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 else []
    with open(log, "wb") as f:
        return proc.spawn([*pin, *argv], name=name, stdout=f, stderr=subprocess.STDOUT, cwd=str(cwd))


def run(quick: bool) -> list[Row]:
    for tool in ("dnsperf", "gdnsd", "dig"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install dnsperf gdnsd dnsutils)")
    seconds, runs = (3, 1) if quick else (10, 3)
    d = Path(tempfile.mkdtemp(prefix="herder-bench-dns-"))
    (d / "zones").mkdir()
    (d / "run").mkdir()
    (d / "state").mkdir()
    zone = d / "example.test.zone"
    zone.write_text(ZONE)
    (d / "zones" / "example.test").write_text(ZONE + "geo 20 IN DYNA geoip!geo\n")
    (d / "static.txt").write_text("www.example.test A\n" * 1000)
    (d / "geo.txt").write_text("geo.example.test A\n" * 1000)
    gport, hport, tport = _free_port(), _free_port(), _free_port()
    (d / "config").write_text(GDNSD_CONFIG.format(port=gport, d=d))
    (d / "herder.toml").write_text(HERDER_CONFIG.format(port=hport, zone=zone, udp_io="loop"))
    (d / "herder-thread.toml").write_text(HERDER_CONFIG.format(port=tport, zone=zone, udp_io="thread"))

    cases = [("static A", d / "static.txt", []), ("ECS-mapped A", d / "geo.txt", ["-E", ECS_HEX])]
    results: dict[tuple[str, str], tuple[float, float, float]] = {}
    servers = {
        "gdnsd": (["gdnsd", "-c", str(d), "start"], gport),
        "herder": ([sys.executable, "-m", "herder", "run", str(d / "herder.toml")], hport),
        "herder-thread": ([sys.executable, "-m", "herder", "run", str(d / "herder-thread.toml")], tport),
    }
    for name, (argv, port) in servers.items():
        child = _start(name, argv, d / f"{name}.log", d)
        try:
            _wait_tcp(port, child)
            assert _dig(port, "www.example.test") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"], name
            got = _dig(port, "geo.example.test", "+subnet=198.18.1.0/24")
            assert got == ["198.18.1.11"], f"{name}: ECS answer {got}"
            for case, qfile, extra in cases:
                results[(name, case)] = _measure(child, port, qfile, seconds, runs, extra)
        finally:
            child.stop(timeout=5)
    shutil.rmtree(d, ignore_errors=True)

    rows = []
    for case, _, _ in cases:
        gq, gc, gl = results[("gdnsd", case)]
        for name, label in (("herder", "udp_io=loop"), ("herder-thread", "udp_io=thread")):
            hq, hc, hl = results[(name, case)]
            note = f"median of {runs}x{seconds}s; lost herder {hl:.2%} gdnsd {gl:.2%}"
            rows.append(Row(f"{case}, {label}: queries/s", "qps", hq, gq, "gdnsd 3.8", note=note))
            rows.append(Row(f"{case}, {label}: per-core capacity", "qps/core", hc, gc, "gdnsd 3.8",
                            note="qps / CPU share of the server; goal >= 0.6x"))
    return rows
