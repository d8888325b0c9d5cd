"""L4: herder's kernel path (nftables NAT) and userspace relay vs direct and haproxy ``mode tcp``.

Method: a ``flat`` lab (client, director, rs1 on one bridge). rs1 runs an iperf3 server
and an nginx ``return 200`` backend, pinned to core 0 with the client's iperf3 and wrk;
haproxy (``mode tcp``, nbthread 1) and herder's relay (``herder run``, userspace backend)
run in the director pinned to core 1. The kernel path is herder's plan applied with
libnftables in the director's namespace (the same code ``herder run`` uses). Each case
is the median of N runs:

* bulk: ``iperf3 -c TARGET -t T`` (Gbit/s received);
* new connections/s: ``wrk -t1 -c64 -H 'Connection: close'`` (one TCP connection per
  request, through the path to one backend connection);
* Maglev: a 65,537-slot mh table over 100 servers: the transaction that removes one
  server (only the changed slots), against the full replace and the 50 ms goal.

Needs root (a lab), iperf3, wrk, nginx, haproxy, taskset.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import Row
from herder import proc
from herder.lab import Lab
from herder.lab.node import helper_env

DESCRIPTION = "L4 kernel path and relay vs direct and haproxy mode tcp (iperf3, wrk close); Maglev map updates"

VIP = "198.18.0.100"
RS = "198.18.0.11"
DIR = "198.18.0.2"
PORTS = {"iperf": 5201, "http": 8080}
OFFSET = {"haproxy": 10000, "relay": 20000}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _iperf(client, host: str, port: int, seconds: int) -> float:
    res = client.run(["taskset", "-c", "0", "iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J"],
                     timeout=seconds + 30)
    data = json.loads(res.stdout)
    if "error" in data or "sum_received" not in data.get("end", {}):
        raise RuntimeError(f"iperf3 to {host}:{port}: {data.get('error', 'no result')}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def _wrk(client, host: str, port: int, seconds: int) -> float:
    res = client.run(["taskset", "-c", "0", "wrk", "-t1", "-c64", f"-d{seconds}s", "-H", "Connection: close",
                      f"http://{host}:{port}/"], timeout=seconds + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", res.stdout)
    errors = re.search(r"Socket errors: (.*)", res.stdout)
    if not m:
        raise RuntimeError(f"wrk output: {res.stdout[-400:]}")
    if errors:
        print(f"   wrk {host}:{port}: socket errors: {errors.group(1)}", flush=True)
    return float(m.group(1))


def _setup(lab: Lab, d: Path) -> None:
    rs1, director = lab.node("rs1"), lab.node("director")
    rs1.run(["ip", "route", "add", "198.18.0.10/32", "via", DIR])
    director.run(["ip", "addr", "add", f"{VIP}/32", "dev", "eth0"])
    # The director stands for a machine of its own: its receive processing (the kernel
    # path's NAT, haproxy's and the relay's sockets alike) runs on core 1 (RPS), where
    # haproxy and the relay are pinned; without this a veth hands every packet to the
    # sender's core, and the kernel path would share core 0 with wrk and the backend.
    director.run(["sh", "-c", "echo 2 > /sys/class/net/eth0/queues/rx-0/rps_cpus"])
    (d / "nginx.conf").write_text(f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;
events {{ worker_connections 8192; }}
http {{ access_log off; server {{ listen {RS}:{PORTS['http']} backlog=4096;
  location / {{ return 200 "ok\\n"; }} }} }}
""")
    rs1.start(["taskset", "-c", "0", "nginx", "-c", str(d / "nginx.conf"), "-p", str(d)], name="nginx",
              ready_ports=[PORTS["http"]])
    rs1.start(["taskset", "-c", "0", "iperf3", "-s", "-p", str(PORTS["iperf"])], name="iperf3",
              ready_ports=[PORTS["iperf"]])
    listens = "\n".join(f"""listen {name}
    bind {DIR}:{port + OFFSET['haproxy']}
    server rs1 {RS}:{port}
""" for name, port in PORTS.items())
    (d / "haproxy.cfg").write_text(f"""global
    nbthread 1
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{listens}""")
    director.start(["taskset", "-c", "1", "haproxy", "-f", str(d / "haproxy.cfg")], name="haproxy",
                   ready_ports=[p + OFFSET["haproxy"] for p in PORTS.values()])
    services = "\n".join(f"""[services.{name}]
mode = "tcp"
listen = "{DIR}:{port + OFFSET['relay']}"
pool = "{name}"
scheduler = "rr"
[pools.{name}]
[[pools.{name}.servers]]
name = "rs1"
address = "{RS}:{port}"
""" for name, port in PORTS.items())
    (d / "relay.toml").write_text(f"[herder]\nlog_level = \"warning\"\n[l4]\nbackend = \"userspace\"\n{services}")
    director.start(["taskset", "-c", "1", proc.python_executable(), "-m", "herder", "run", str(d / "relay.toml")],
                   name="relay", env=helper_env(), ready_ports=[p + OFFSET["relay"] for p in PORTS.values()],
                   ready_timeout=15)


def _kernel_path(lab: Lab):
    """herder's kernel path in the director: plan + libnftables, as ``herder run`` does."""
    from herder.l4.apply_nft import Applier, LibNft
    from herder.l4.plan import plan
    from herder.l4.ruleset import Scheduler, VirtualServiceSpec
    from herder.pool import Endpoint, Pool, PoolState, Server

    ps = PoolState()
    ps.load([Pool(n, (Server("rs1", Endpoint(RS, p)),)) for n, p in PORTS.items()])
    specs = [VirtualServiceSpec(n, "tcp", VIP, p, n, scheduler=Scheduler.RR) for n, p in PORTS.items()]
    applier = Applier(LibNft(lab.node("director").netns))
    applier.apply(plan(ps.snapshot, specs))
    return applier


def _maglev(applier, reps: int) -> tuple[list[float], list[float], list[float], int]:
    """Times (ms) of: full replace, one-server removal (transaction), the same with plan+render."""
    from herder.l4.plan import plan
    from herder.l4.ruleset import Scheduler, VirtualServiceSpec
    from herder.pool import Endpoint, Health, HealthState, Pool, PoolState, Server

    ps = PoolState()
    servers = tuple(Server(f"m{i:03d}", Endpoint(f"198.18.2.{i}", 9999)) for i in range(1, 101))
    ps.load([Pool("mh", servers)])
    spec = VirtualServiceSpec("mh", "tcp", VIP, 9999, "mh", scheduler=Scheduler.MH)
    full, txn, total = [], [], []
    changed = 0
    rs = plan(ps.snapshot, [spec])
    for _ in range(reps):
        applier.model = None
        full.append(applier.apply(rs).duration_s * 1000)
        for state in (HealthState.DOWN, HealthState.UP):
            t0 = time.perf_counter()
            ps.set_health("mh", "m042", Health(state))
            new = plan(ps.snapshot, [spec], previous=rs)
            res = applier.apply(new)
            total.append((time.perf_counter() - t0) * 1000)
            txn.append(res.duration_s * 1000)
            changed = sum(1 for a, b in zip(rs.services[0].table, new.services[0].table, strict=True) if a != b)
            rs = new
    return full, txn, total, changed


def run(quick: bool) -> list[Row]:
    for tool in ("iperf3", "wrk", "nginx", "haproxy", "taskset"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install {tool})")
    seconds, reps = (2, 1) if quick else (5, 3)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-l4-") as tmp, \
            Lab.up("flat", name=f"bl4{int(time.time()) % 100000}", start_processes=False) as lab:
        d = Path(tmp)
        _setup(lab, d)
        applier = _kernel_path(lab)
        client = lab.node("client")
        targets = {"direct": (RS, 0), "kernel": (VIP, 0), "haproxy": (DIR, OFFSET["haproxy"]),
                   "relay": (DIR, OFFSET["relay"])}
        bulk: dict[str, list[float]] = {k: [] for k in targets}
        conns: dict[str, list[float]] = {k: [] for k in targets}
        for _ in range(reps):
            for k, (host, off) in targets.items():
                if k == "kernel":  # every run starts with the director's conntrack table empty
                    lab.node("director").run(["conntrack", "-F"], check=False)
                bulk[k].append(_iperf(client, host, PORTS["iperf"] + off, seconds))
                conns[k].append(_wrk(client, host, PORTS["http"] + off, seconds))
        b = {k: _median(v) for k, v in bulk.items()}
        c = {k: _median(v) for k, v in conns.items()}
        rows += [
            Row("bulk: kernel NAT vs direct", "Gbit/s", b["kernel"], b["direct"], "direct", note="goal >= 0.95x"),
            Row("bulk: kernel NAT vs haproxy", "Gbit/s", b["kernel"], b["haproxy"], "haproxy tcp"),
            Row("bulk: relay vs haproxy", "Gbit/s", b["relay"], b["haproxy"], "haproxy tcp", note="goal >= 1.0x"),
            Row("conn/s: kernel NAT vs haproxy", "conn/s", c["kernel"], c["haproxy"], "haproxy tcp",
                note="goal >= 1.0x"),
            Row("conn/s: kernel NAT vs direct", "conn/s", c["kernel"], c["direct"], "direct"),
            Row("conn/s: relay vs haproxy", "conn/s", c["relay"], c["haproxy"], "haproxy tcp", note="goal >= 0.6x"),
        ]
        full, txn, total, changed = _maglev(applier, 1 if quick else 3)
        rows += [
            Row("maglev 65537 slots: 1 of 100 servers removed (txn)", "ms", _median(txn), 50.0, "goal 50 ms",
                higher_is_better=False, note=f"{changed} slots rewritten"),
            Row("maglev: same, plan + diff + apply", "ms", _median(total), 50.0, "goal 50 ms",
                higher_is_better=False),
            Row("maglev: one-server change vs full replace", "ms", _median(txn), _median(full), "full replace",
                higher_is_better=False),
        ]
        applier.remove()
        applier.backend.close()
        print("   raw: bulk " + ", ".join(f"{k} {v:.2f}" for k, v in b.items())
              + " | conn/s " + ", ".join(f"{k} {v:,.0f}" for k, v in c.items()), flush=True)
    return rows
