"""VRRP failover after a crash: herder vs keepalived 2.2.7, same lab, same keepalived.conf.

Method. A ``vrrp`` lab (client .10, dir1 .2, dir2 .3 on one bridge). Both directors run
the same implementation with the *same* keepalived.conf (herder runs keepalived.conf
as written): VRID 51, VIP 198.18.0.100, priority 100 on both, ``nopreempt``, state
BACKUP, and ``advert_int`` 1 s with VRRPv2 or 0.1 s with VRRPv3. Equal priorities give
every run the same skew time, and ``nopreempt`` lets a restarted router stay backup, so
the master alternates between the two nodes from run to run and no run waits for a
preemption.

One run: tcpdump at the client (ARP and VRRP); crash the master -- herder: SIGKILL to its
process group; keepalived: the kernel-recipes G10 sequence (SIGSTOP the parent, SIGKILL
the VRRP child, SIGKILL the parent) -- then take the crashed node's link down; wait until
the backup holds the VIP; read the capture with ``tcpdump -tt``. Two figures per run,
both from packet timestamps at the client:

* **last advert -> first GARP**: from the crashed master's last advert to the new
  master's first gratuitous ARP. The RFC fixes this at Master_Down_Interval
  (3 x advert_int + skew: 3.609 s for v2 at 1 s, 0.36 s for v3 at 0.1 s, priority 100)
  plus the implementation's reaction time; this is the figure to compare.
* **kill -> first GARP**: what an outage looks like from the crash (the crash falls at a
  random point of an advert interval, so it is noisier).

herder's "Entering MASTER STATE" log line (ms timestamps) is also read, as a check. The
crashed node is then cleaned (VIP, keepalived's nft table), its link brought up, and its
implementation restarted as backup before the next run. The ratio is herder / keepalived
of the medians; lower is better.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import time
from pathlib import Path

from bench.common import Row
from herder.lab import Lab
from herder.lab.node import Node, helper_env
from herder.proc import Child, python_executable, run_sync

DESCRIPTION = "VRRP failover after a crash (v2 @1s, v3 @0.1s): last advert -> first GARP, herder vs keepalived"

VIP = "198.18.0.100"
API_PORT = 8404
CASES = ((2, 1.0), (3, 0.1))


def _conf(version: int, advert: float) -> str:
    return f"""global_defs {{
    vrrp_version {version}
}}
vrrp_instance VI_1 {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int {advert:g}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"""


def _has_vip(node: Node) -> bool:
    data = json.loads(node.run(["ip", "-j", "-4", "addr", "show", "dev", "eth0"]).stdout)
    return any(a["local"] == VIP for d in data for a in d.get("addr_info", []))


def _wait(what: str, fn, timeout: float, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fn():
                return
        except Exception:  # not answering yet
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.1f}s waiting for {what}")


class _Impl:
    """One implementation running on one node; subclassed for herder and keepalived."""

    name = ""

    def __init__(self, node: Node, conf: Path, run: int) -> None:
        self.node = node
        self.conf = conf
        self.proc_name = f"{self.name}-{run}"
        self.child: Child | None = None

    @property
    def log(self) -> Path:
        return self.node.lab.log_path(self.node.name, self.proc_name)

    def start(self) -> None:
        raise NotImplementedError

    def is_backup(self) -> bool:
        raise NotImplementedError

    def crash(self) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        if self.child is not None and self.child.alive():
            self.child.stop(timeout=5)


class _Herder(_Impl):
    name = "herder"

    def start(self) -> None:
        api = self.conf.with_name(f"{self.node.name}-api.toml")
        api.write_text(f'[api]\nlisten = "127.0.0.1:{API_PORT}"\n')
        self.child = self.node.start([python_executable(), "-m", "herder", "run", str(self.conf), str(api)],
                                     name=self.proc_name, env=helper_env(), ready_ports=[API_PORT],
                                     ready_timeout=15)

    def state(self) -> dict:
        out = self.node.run(["curl", "-s", "-m", "2", f"http://127.0.0.1:{API_PORT}/vrrp"], timeout=5).stdout
        return json.loads(out)["instances"]["VI_1"]

    def is_backup(self) -> bool:
        st = self.state()
        return st["state"] == "BACKUP" and st["stats"]["adverts_received"] > 0

    def crash(self) -> float:
        assert self.child is not None
        t = time.time()
        self.child.stop(timeout=2, sig=signal.SIGKILL)
        return t

    def master_log_time(self) -> float | None:
        for line in reversed(self.log.read_text(errors="replace").splitlines()):
            if "(VI_1) Entering MASTER STATE" in line:
                import datetime as dt

                return dt.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC).timestamp()
        return None


class _Keepalived(_Impl):
    name = "keepalived"

    def _pidfiles(self) -> tuple[Path, Path]:
        d = self.conf.parent
        return d / f"{self.node.name}-ka.pid", d / f"{self.node.name}-ka-vrrp.pid"

    def start(self) -> None:
        pid, vrrp_pid = self._pidfiles()
        for p in (pid, vrrp_pid):
            p.unlink(missing_ok=True)
        self.child = self.node.start(["keepalived", "-n", "-l", "-D", "-f", str(self.conf), "-p", str(pid),
                                      "-r", str(vrrp_pid)], name=self.proc_name)

    def is_backup(self) -> bool:
        return "(VI_1) Entering BACKUP STATE" in self.log.read_text(errors="replace")

    def crash(self) -> float:
        assert self.child is not None
        _, vrrp_pid = self._pidfiles()
        t = time.time()
        os.kill(self.child.pid, signal.SIGSTOP)  # kernel-recipes G10: PDEATHSIG would stop the child gracefully
        try:
            os.kill(int(vrrp_pid.read_text().split()[0]), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        self.child.stop(timeout=2, sig=signal.SIGKILL)
        return t

    def master_log_time(self) -> float | None:
        return None  # keepalived's console log has one-second timestamps


def _clean(node: Node) -> None:
    """What a SIGKILLed herder or keepalived leaves: the VIP, keepalived's nft table."""
    node.run(["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
    node.run(["nft", "delete", "table", "ip", "keepalived"], check=False)


def _packets(path: Path) -> list[tuple[float, str, str]]:
    """(time, source MAC, rest of the line) of every captured packet."""
    res = run_sync(["tcpdump", "-tt", "-n", "-e", "-r", str(path)], timeout=20)
    out = []
    for line in res.stdout.decode(errors="replace").splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3:
            out.append((float(parts[0]), parts[1], parts[2]))
    return out


def _one_run(lab: Lab, impls: dict[str, _Impl], master: str, t_case: float, run: int) -> dict:
    client = lab.node("client")
    backup = "dir2" if master == "dir1" else "dir1"
    m, b = lab.node(master), lab.node(backup)
    m_ip = m.address
    cap = client.capture("arp or ip proto 112")
    # At least one advert of the master before the crash, then a point of the advert
    # interval drawn from a sequence that is the same for both implementations.
    time.sleep(t_case + 0.1 + random.Random(1000 + run).uniform(0, t_case))
    t_kill = impls[master].crash()
    m.run(["ip", "link", "set", "eth0", "down"])
    _wait(f"{backup} to hold the VIP", lambda: _has_vip(b), 3 * t_case + 3)
    time.sleep(0.1)
    cap.stop()
    pkts = _packets(cap.path)
    b_mac = b.mac("eth0")
    adverts = [t for t, _, rest in pkts if f"{m_ip} > 224.0.0.18" in rest and "VRRP" in rest and t <= t_kill + 0.01]
    garp = re.compile(rf"who-has {re.escape(VIP)} (\(\S+\) )?tell {re.escape(VIP)}")
    garps = [t for t, mac, rest in pkts if mac == b_mac and garp.search(rest) and t > t_kill]
    if not adverts or not garps:
        raise RuntimeError(f"capture incomplete: {len(adverts)} advert(s) before the kill, {len(garps)} GARP(s) after")
    logt = impls[backup].master_log_time() if isinstance(impls[backup], _Herder) else None
    return {"last_advert": garps[0] - adverts[-1], "kill": garps[0] - t_kill,
            "log": None if logt is None else logt - t_kill}


def _measure(lab: Lab, cls: type[_Impl], version: int, advert: float, runs: int) -> list[dict]:
    d1, d2 = lab.node("dir1"), lab.node("dir2")
    conf_dir = lab.state_dir / "bench-vrrp"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / f"keepalived-v{version}.conf"
    conf.write_text(_conf(version, advert))
    impls: dict[str, _Impl] = {}
    results = []
    try:
        for n in (d1, d2):
            impls[n.name] = cls(n, conf, 0)
            impls[n.name].start()
        _wait("a master", lambda: _has_vip(d1) or _has_vip(d2), 3 * advert + 5)
        time.sleep(2 * advert + 0.3)
        for i in range(runs):
            master = "dir1" if _has_vip(d1) else "dir2"
            results.append(_one_run(lab, impls, master, advert, i))
            node = lab.node(master)
            impls[master].stop()
            _clean(node)
            node.run(["ip", "link", "set", "eth0", "up"])
            impls[master] = cls(node, conf, i + 1)
            impls[master].start()
            _wait(f"{master} back as backup", impls[master].is_backup, 3 * advert + 5)
            time.sleep(advert + 0.1)
    finally:
        for imp in impls.values():
            imp.stop()
        for n in (d1, d2):
            _clean(n)
            n.run(["ip", "link", "set", "eth0", "up"], check=False)
    return results


def _summary(xs: list[float]) -> str:
    q = sorted(xs)
    return f"n={len(q)} min {q[0]:.3f} max {q[-1]:.3f}"


def run(quick: bool) -> list[Row]:
    if os.geteuid() != 0:
        raise RuntimeError("needs root (network namespaces)")
    runs = 3 if quick else 10
    rows: list[Row] = []
    name = "bv" + re.sub(r"[^a-z0-9]", "", format(os.getpid(), "x"))[:8]
    with Lab.up("vrrp", name=name) as lab:
        for version, advert in CASES:
            got = {cls.name: _measure(lab, cls, version, advert, runs) for cls in (_Herder, _Keepalived)}
            case = f"v{version} @{advert:g}s"
            for key, label in (("last_advert", "last advert -> GARP"), ("kill", "kill -> GARP")):
                h = [r[key] for r in got["herder"]]
                k = [r[key] for r in got["keepalived"]]
                rows.append(Row(f"{case} failover, {label} (median)", "s", statistics.median(h),
                                statistics.median(k), "keepalived 2.2.7", higher_is_better=False,
                                note=f"herder {_summary(h)}; keepalived {_summary(k)}"))
            logs = [r["log"] for r in got["herder"] if r["log"] is not None]
            if logs:
                rows.append(Row(f"{case} herder kill -> 'Entering MASTER STATE' log line (median)", "s",
                                statistics.median(logs), None, "-", higher_is_better=False, note=_summary(logs)))
    return rows
