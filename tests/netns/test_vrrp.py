"""VRRP on a real (namespaced) LAN: herder directors as ``herder run`` processes in lab
nodes, and real keepalived 2.2.7 as the interop peer.

Topology ``vrrp`` (herder/lab/topologies/vrrp.toml): client .10, dir1 .2, dir2 .3 on one
bridge; the VIP is 198.18.0.100. Each director also serves HTTP on :80 (herder's tiny
server, answering with its node name), so the client's requests to the VIP show who holds
it. A "crash" is SIGKILL to the herder process group and the director's link taken down
(nothing more leaves that node, as when a machine dies). Timings are measured from
timestamps (the kill, herder's "Entering MASTER STATE" log line) and printed; they are
checked only against the RFC bound plus slack, never tightly.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from herder.lab.node import Node, helper_env
from herder.proc import Child, python_executable, run_sync

pytestmark = pytest.mark.netns

API_PORT = 8404
VIP = "198.18.0.100"
VMAC = "00:00:5e:00:01:33"
#: Any of these in keepalived's log is a complaint about what it received.
KEEPALIVED_COMPLAINTS = re.compile(
    r"invalid|Invalid|mismatch|wrong version|unexpected|not present in MASTER|too (short|long)|"
    r"Expected (multi|uni)cast|CONFIGURATION ERROR|equal priority advert")


# --------------------------------------------------------------------------- helpers


def write(node: Node, name: str, text: str) -> Path:
    d = node.lab.state_dir / "vrrp"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{node.name}-{name}"
    p.write_text(text)
    return p


def herder_toml(priority: int, *, version: int = 3, advert: float = 0.1, extra: str = "", globals_: str = "",
                prefix: str = "") -> str:
    return f"""{prefix}
[api]
listen = "127.0.0.1:{API_PORT}"

[vrrp]
{globals_}

[vrrp.instances.VI_1]
interface = "eth0"
virtual_router_id = 51
priority = {priority}
version = {version}
advert_int = {advert}
virtual_ipaddress = ["{VIP}/24"]
{extra}
"""


def start_herder(node: Node, conf: str, *, name: str = "herder", filename: str = "herder.toml") -> Child:
    path = write(node, filename, conf)
    return node.start([python_executable(), "-m", "herder", "run", str(path)], name=name, env=helper_env(),
                      ready_ports=[API_PORT], ready_timeout=15)


def status(node: Node) -> dict:
    res = node.run(["curl", "-s", "-m", "2", f"http://127.0.0.1:{API_PORT}/vrrp"], timeout=5)
    return json.loads(res.stdout)


def inst(node: Node, name: str = "VI_1") -> dict:
    return status(node)["instances"][name]


def wait_for(what: str, fn, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # the API may not answer yet
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_state(node: Node, state: str, timeout: float, name: str = "VI_1") -> dict:
    return wait_for(f"{node.name} {name} {state}", lambda: (i := inst(node, name))["state"] == state and i, timeout)


def vips(node: Node, dev: str = "eth0") -> list[str]:
    data = json.loads(node.run(["ip", "-j", "-4", "addr", "show", "dev", dev]).stdout)
    return [a["local"] for d in data for a in d.get("addr_info", [])]


def log_times(node: Node, process: str, pattern: str) -> list[float]:
    """Wall-clock times of herder log lines matching ``pattern`` (herder logs UTC, ms)."""
    out = []
    for line in node.lab.log_path(node.name, process).read_text(errors="replace").splitlines():
        if re.search(pattern, line):
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC)
            out.append(stamp.timestamp())
    return out


def crash(node: Node, child: Child) -> float:
    """SIGKILL the herder (no priority 0, VIP left behind) and cut the node's link."""
    t = time.time()
    child.stop(timeout=2, sig=signal.SIGKILL)
    node.run(["ip", "link", "set", "eth0", "down"])
    return t


def arp_mac(client: Node, address: str = VIP) -> str | None:
    for n in client.neighbours():
        if n.address == address:
            return n.lladdr
    return None


def report(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n    [vrrp] {text}")


def garp_times(client: Node, capture, mac: str) -> list[float]:
    res = run_sync(["tcpdump", "-tt", "-n", "-e", "-r", str(capture.path), "arp"], timeout=10)
    out = []
    for line in res.stdout.decode(errors="replace").splitlines():
        if line.split()[1:2] == [mac] and f"tell {VIP}" in line:
            out.append(float(line.split()[0]))
    return out


# --------------------------------------------------------------------------- herder and herder


LECTURE = """
vrrp_script chk_haproxy {
    script "killall -0 haproxy"
    interval 2
    weight 2
}

vrrp_instance VI_1 {
    interface eth0
    state %(state)s
    virtual_router_id 51
    priority %(priority)d
    virtual_ipaddress {
        198.18.0.100
    }
    track_script {
        chk_haproxy
    }
}
"""


def test_lecture_config_failover_on_sigkill_and_preemption(lab_up, capsys):
    """The lecture's keepalived.conf, as written (interface and VIP changed), on two herders."""
    lab = lab_up("vrrp")
    d1, d2, client = lab.node("dir1"), lab.node("dir2"), lab.node("client")
    for d in (d1, d2):
        d.serve_http(80)
    api = f'[api]\nlisten = "127.0.0.1:{API_PORT}"\n'
    write(d1, "keepalived.conf", LECTURE % {"state": "MASTER", "priority": 101})
    write(d2, "keepalived.conf", LECTURE % {"state": "BACKUP", "priority": 100})

    def run(node: Node, name: str) -> Child:
        write(node, "api.toml", api)
        d = node.lab.state_dir / "vrrp"
        return node.start([python_executable(), "-m", "herder", "run", str(d / f"{node.name}-keepalived.conf"),
                           str(d / f"{node.name}-api.toml")], name=name, env=helper_env(),
                          ready_ports=[API_PORT], ready_timeout=15)

    h1 = run(d1, "herder")
    h2 = run(d2, "herder")
    m = wait_state(d1, "MASTER", 6)
    wait_state(d2, "BACKUP", 2)
    assert m["version"] == 2 and m["advert_int"] == 1.0 and m["vips"] == [VIP]
    assert VIP in vips(d1) and VIP not in vips(d2)
    assert client.requests(f"http://{VIP}/", count=2, timeout=1).counts == {"dir1": 2}
    assert arp_mac(client) == d1.mac("eth0")
    # the lecture's track script ran (killall -0 only tests for a process: signal 0)
    assert status(d1)["scripts"]["chk_haproxy"]["runs"] >= 1

    # SIGKILL the master while the client sends bounded requests to the VIP
    cap = client.capture("arp")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(client.requests, f"http://{VIP}/", count=40, timeout=0.25, interval=0.1)
        time.sleep(1.0)
        t_kill = crash(d1, h1)
        wait_state(d2, "MASTER", 6)
        rep = fut.result(timeout=30)
    cap.stop()
    took = log_times(d2, "herder", r"\(VI_1\) Entering MASTER STATE")[-1] - t_kill
    garps = garp_times(client, cap, d2.mac("eth0"))
    bound = 3 * 1.0 + (256 - 100) / 256  # 3 x advert_int + skew (RFC 3768 6.1)
    report(capsys, f"v2/1s SIGKILL failover: dir2 MASTER {took:.3f}s after the kill, first GARP at the client "
                   f"{garps[0] - t_kill:.3f}s (bound {bound:.3f}s after the last advert); client saw "
                   f"{len(rep.errors)} failed request(s), answers: {rep.counts}")
    assert took <= bound + 0.5
    assert garps and garps[0] - t_kill <= bound + 0.5
    assert rep.servers[0] == "dir1" and rep.servers[-1] == "dir2"
    assert arp_mac(client) == d2.mac("eth0")  # the client's ARP entry moved
    assert VIP in vips(d2)
    assert inst(d2)["transitions"][-1]["cause"].startswith("master down: no advert from 198.18.0.2")

    # preemption: dir1 comes back (herder first, with the link still down: FAULT, stale VIP removed)
    h1 = run(d1, "herder2")
    wait_state(d1, "FAULT", 5)
    assert VIP not in vips(d1)
    d1.run(["ip", "link", "set", "eth0", "up"])
    wait_state(d1, "MASTER", 8)
    wait_state(d2, "BACKUP", 2)
    assert VIP in vips(d1) and VIP not in vips(d2)
    wait_for("the client's ARP entry back on dir1", lambda: arp_mac(client) == d1.mac("eth0"), 3)
    assert client.requests(f"http://{VIP}/", count=2, timeout=1).counts == {"dir1": 2}
    causes = [t["cause"] for t in inst(d1)["transitions"]]
    assert any(c.startswith("fault cleared") for c in causes)
    assert causes[-1].startswith("preempting lower-priority master 198.18.0.3")
    h1.stop()
    h2.stop()


def test_nopreempt_with_vmac_keeps_the_client_arp_entry(lab_up, capsys):
    lab = lab_up("vrrp")
    d1, d2, client = lab.node("dir1"), lab.node("dir2"), lab.node("client")
    for d in (d1, d2):
        d.serve_http(80)
    extra = "nopreempt = true\nuse_vmac = true"
    h1 = start_herder(d1, herder_toml(150, extra=extra))
    wait_state(d1, "MASTER", 3)
    h2 = start_herder(d2, herder_toml(100, extra=extra))
    wait_state(d2, "BACKUP", 3)
    assert vips(d1, "vrrp.51") == [VIP] and vips(d2, "vrrp.51") == []
    assert d1.mac("vrrp.51") == d2.mac("vrrp.51") == VMAC
    assert d1.run(["sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore"]).stdout.strip() == "1"
    assert client.requests(f"http://{VIP}/", count=2, timeout=1).counts == {"dir1": 2}
    assert arp_mac(client) == VMAC

    t_kill = crash(d1, h1)
    wait_state(d2, "MASTER", 3)
    took = log_times(d2, "herder", r"\(VI_1\) Entering MASTER STATE")[-1] - t_kill
    bound = 3 * 0.1 + (156 * 10 // 256) / 100
    report(capsys, f"v3/0.1s + use_vmac SIGKILL failover: dir2 MASTER {took:.3f}s after the kill "
                   f"(bound {bound:.2f}s after the last advert)")
    assert took <= bound + 0.3
    wait_for("dir2 to answer on the VIP", lambda: client.requests(f"http://{VIP}/", count=1, timeout=0.5)
             .counts == {"dir2": 1}, 3)
    assert arp_mac(client) == VMAC  # the client's entry never changed: the VMAC moved

    # dir1 returns; with nopreempt it stays BACKUP although its priority is higher
    h1 = start_herder(d1, herder_toml(150, extra=extra), name="herder2")
    d1.run(["ip", "link", "set", "eth0", "up"])
    wait_state(d1, "BACKUP", 5)
    time.sleep(1.0)  # > 2 master-down intervals
    assert inst(d1)["state"] == "BACKUP" and inst(d2)["state"] == "MASTER"
    assert inst(d1)["master"] == "198.18.0.3"
    assert vips(d1, "vrrp.51") == []
    h1.stop()
    h2.stop()
    # herder removes its VMACs and restores the sysctls it changed
    for d in (d1, d2):
        assert "vrrp.51" not in d.run(["ip", "-br", "link"]).stdout
    assert d2.run(["sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore"]).stdout.strip() == "0"


def test_failing_track_script_lowers_priority_and_moves_mastership(lab_up, capsys):
    lab = lab_up("vrrp")
    d1, d2 = lab.node("dir1"), lab.node("dir2")
    flag = lab.state_dir / "vrrp" / "dir1-healthy"
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text("ok\n")
    notes = lab.state_dir / "vrrp" / "dir1-notify.log"
    script = f'''
[vrrp.scripts.chk_service]
script = "test -e {flag}"
interval = 0.1
weight = -60
fall = 2
rise = 2
'''
    extra = f'track_script = ["chk_service"]\nnotify = "echo >> {notes}"'
    h1 = start_herder(d1, herder_toml(150, extra=extra, prefix=script))
    wait_state(d1, "MASTER", 3)
    h2 = start_herder(d2, herder_toml(100))
    wait_state(d2, "BACKUP", 3)
    assert inst(d1)["effective_priority"] == 150

    t0 = time.time()
    flag.unlink()
    wait_state(d2, "MASTER", 3)
    took = time.time() - t0
    i1 = wait_state(d1, "BACKUP", 1)
    report(capsys, f"track script failed -> dir2 MASTER after {took:.3f}s (fall 2 x 0.1s, then preemption)")
    assert i1["effective_priority"] == 90 and i1["tracking"]["scripts"]["chk_service"]["ok"] is False
    assert inst(d2)["transitions"][-1]["cause"].startswith("preempting lower-priority master 198.18.0.2 (90 < 100)")

    flag.write_text("ok\n")
    wait_state(d1, "MASTER", 3)
    wait_state(d2, "BACKUP", 1)
    h1.stop()
    h2.stop()
    # the generic notify script ran for every transition, in order, with keepalived's arguments
    lines = [ln.split() for ln in notes.read_text().splitlines()]
    assert [ln[2] for ln in lines] == ["BACKUP", "MASTER", "BACKUP", "MASTER", "STOP"]
    assert all(ln[:2] == ["INSTANCE", "VI_1"] for ln in lines)


SEND = """
import socket, struct, sys
from ipaddress import ip_address
from herder.ha.vrrp.packet import Advert, MCAST_V4, build_ipv4
src = ip_address("198.18.0.10")
vips = tuple(ip_address(a) for a in sys.argv[2].split(","))
adv = Advert(3, 51, int(sys.argv[3]), 10, vips)
msg = adv.encode(src, MCAST_V4)
if sys.argv[1] == "badsum":
    msg = msg[:6] + bytes([msg[6] ^ 0xff, msg[7]]) + msg[8:]
ttl = 254 if sys.argv[1] == "ttl254" else 255
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
for _ in range(int(sys.argv[4])):
    s.sendto(build_ipv4(src, MCAST_V4, msg, ttl=ttl), ("224.0.0.18", 0))
"""


def test_malformed_adverts_are_dropped_and_counted(lab_up):
    lab = lab_up("vrrp")
    d1, client = lab.node("dir1"), lab.node("client")
    h1 = start_herder(d1, herder_toml(100))
    wait_state(d1, "MASTER", 3)

    def send(kind: str, prio: int, count: int, addrs: str = VIP) -> None:
        client.run([python_executable(), "-c", SEND, kind, addrs, str(prio), str(count)], env=helper_env())

    send("badsum", 254, 3)
    send("ttl254", 254, 4)
    send("ok", 254, 2, addrs="198.18.0.200")  # same VRID, another address list: a VRID collision
    time.sleep(0.3)
    i = inst(d1)
    assert i["state"] == "MASTER", "a dropped advert must never be acted on"
    assert i["stats"]["dropped"] == {"address_list": 2, "checksum": 3, "ttl": 4}
    assert i["collisions"] == [{"from": "198.18.0.10", "addresses": ["198.18.0.200"], "priority": 254, "count": 2}]
    # the same advert, well formed, is acted on: dir1 yields to the higher priority, then
    # takes over again when no more adverts come
    send("ok", 254, 1)
    wait_for("dir1 to yield and come back", lambda: [t["cause"] for t in inst(d1)["transitions"]][-2:] == [
        "higher priority advert from 198.18.0.10 (254 > 100)", "master down: no advert from 198.18.0.10 for "
        "0.360s"], 3)
    h1.stop()
    log = lab.log_path("dir1", "herder").read_text()
    assert "VRID 51 collision: 198.18.0.10 advertises 198.18.0.200" in log


def test_ipv6_v3_two_herders(lab_up, capsys):
    import tomllib

    from herder.lab import topology as topo

    data = tomllib.loads((Path(topo.__file__).parent / "topologies" / "vrrp.toml").read_text())
    data["ipv6"] = True
    lab = lab_up(topo.parse_topology(data, name="vrrp6"))
    d1, d2, client = lab.node("dir1"), lab.node("dir2"), lab.node("client")
    conf = """
[api]
listen = "127.0.0.1:%d"
[vrrp.instances.V6]
interface = "eth0"
virtual_router_id = 52
priority = %d
advert_int = 0.1
virtual_ipaddress = ["2001:2::100/64"]
"""
    cap = client.capture("icmp6 and ip6[40] == 136")
    h1 = start_herder(d1, conf % (API_PORT, 150))
    h2 = start_herder(d2, conf % (API_PORT, 100))
    m = wait_state(d1, "MASTER", 5, "V6")
    b = wait_for("dir2 to follow dir1", lambda: (x := inst(d2, "V6"))["master"] == m["primary"] and x, 2)
    assert m["version"] == 3 and m["family"] == "IPv6" and m["primary"].startswith("fe80::")
    assert b["state"] == "BACKUP" and b["stats"]["dropped_total"] == 0
    assert "2001:2::100/64" in d1.run(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    t = time.time()
    h1.stop()  # graceful: priority 0
    wait_state(d2, "MASTER", 2, "V6")
    report(capsys, f"IPv6 v3/0.1s graceful handover: {time.time() - t:.3f}s")
    cap.stop()
    assert "2001:2::100/64" in d2.run(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    nas = cap.lines()
    assert any(d2.mac("eth0") in ln and "2001:2::100" in ln for ln in nas), nas[-5:]
    h2.stop()


# --------------------------------------------------------------------------- herder and keepalived


def keepalived_conf(priority: int, version: int, advert: float) -> str:
    return f"""global_defs {{
    router_id dir2
    vrrp_version {version}
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"""


def start_keepalived(node: Node, conf: str, name: str = "keepalived") -> tuple[Child, Path]:
    path = write(node, f"{name}.conf", conf)
    d = path.parent
    vrrp_pid = d / f"{node.name}-{name}-vrrp.pid"
    child = node.start(["keepalived", "-n", "-l", "-D", "-f", str(path), "-p", str(d / f"{node.name}-{name}.pid"),
                        "-r", str(vrrp_pid)], name=name)
    return child, vrrp_pid


def crash_keepalived(node: Node, child: Child, vrrp_pid: Path) -> float:
    """A keepalived crash as kernel-recipes G10 says: STOP the parent, KILL the VRRP child,
    KILL the parent, take the link down; then remove what SIGKILL leaves behind."""
    t = time.time()
    os.kill(child.pid, signal.SIGSTOP)
    try:
        os.kill(int(vrrp_pid.read_text().split()[0]), signal.SIGKILL)
    except (OSError, ValueError):
        pass
    child.stop(timeout=2, sig=signal.SIGKILL)
    node.run(["ip", "link", "set", "eth0", "down"])
    cleanup_keepalived(node)
    return t


def cleanup_keepalived(node: Node) -> None:
    node.run(["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
    for line in node.run(["ip", "-br", "link"]).stdout.splitlines():
        name = line.split()[0].split("@")[0]
        if name.startswith("vrrp."):
            node.run(["ip", "link", "del", name], check=False)
    node.run(["nft", "delete", "table", "ip", "keepalived"], check=False)
    node.run(["nft", "delete", "table", "ip6", "keepalived"], check=False)


@pytest.mark.parametrize("version, advert", [(2, 1.0), (3, 0.1)], ids=["v2-1s", "v3-100ms"])
def test_interop_with_keepalived_both_ways(lab_up, capsys, version, advert):
    lab = lab_up("vrrp")
    d1, d2 = lab.node("dir1"), lab.node("dir2")
    down = 3 * advert + 1.0
    try:
        # herder higher: herder is master, keepalived a quiet backup
        h1 = start_herder(d1, herder_toml(150, version=version, advert=advert))
        wait_state(d1, "MASTER", down + 2)
        ka, vrrp_pid = start_keepalived(d2, keepalived_conf(100, version, advert))
        ka_log = lab.log_path("dir2", "keepalived")
        wait_for("keepalived in BACKUP", lambda: "(VI_1) Entering BACKUP STATE" in ka_log.read_text(), 5)
        time.sleep(2 * advert + 0.5)  # several of herder's adverts reach keepalived
        assert inst(d1)["state"] == "MASTER" and "Entering MASTER" not in ka_log.read_text()
        assert VIP not in vips(d2)

        # herder stops (priority 0): keepalived takes over at once
        t = time.time()
        h1.stop()
        wait_for("keepalived MASTER", lambda: "(VI_1) Entering MASTER STATE" in ka_log.read_text(), 3)
        report(capsys, f"v{version}: herder priority 0 -> keepalived MASTER within {time.time() - t:.2f}s")
        assert "Backup received priority 0 advertisement" in ka_log.read_text()

        # keepalived higher: herder (priority 50) stays backup and accepts keepalived's adverts
        h1 = start_herder(d1, herder_toml(50, version=version, advert=advert), name="herder2")
        i = wait_for("herder to hear keepalived", lambda: (x := inst(d1))["stats"]["adverts_received"] >= 2 and x,
                     down + 3)
        assert i["state"] == "BACKUP" and i["master"] == "198.18.0.3" and i["master_priority"] == 100
        assert i["stats"]["dropped"] == {}
        assert VIP in vips(d2) and VIP not in vips(d1)

        # keepalived crashes: herder takes over after the master-down interval
        t_kill = crash_keepalived(d2, ka, vrrp_pid)
        wait_state(d1, "MASTER", down + 2)
        took = log_times(d1, "herder2", r"\(VI_1\) Entering MASTER STATE")[-1] - t_kill
        report(capsys, f"v{version}: keepalived crash -> herder MASTER after {took:.3f}s")
        assert took <= 3 * advert + 1.0 + 0.5
        complaints = [ln for ln in ka_log.read_text().splitlines() if KEEPALIVED_COMPLAINTS.search(ln)]
        assert complaints == [], complaints
        h1.stop()
    finally:
        cleanup_keepalived(d2)


def test_unicast_peers_and_sync_group(lab_up):
    """Two instances per director in a sync group, adverts by unicast: a fault of one
    member moves both instances to the other director."""
    lab = lab_up("vrrp")
    d1, d2 = lab.node("dir1"), lab.node("dir2")
    flag = lab.state_dir / "vrrp" / "dir1-ok"
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text("ok\n")

    def conf(prio: int, me: str, peer: str, script: bool) -> str:
        chk = f'[vrrp.scripts.chk]\nscript = "test -e {flag}"\ninterval = 0.1\n' if script else ""
        track = 'track_script = ["chk"]' if script else ""
        inst = "".join(f"""
[vrrp.instances.{name}]
interface = "eth0"
virtual_router_id = {vrid}
priority = {prio}
version = 3
advert_int = 0.1
unicast_src_ip = "{me}"
unicast_peer = ["{peer}"]
virtual_ipaddress = ["{vip}/24"]
{track if name == "VI_2" else ""}
""" for name, vrid, vip in (("VI_1", 51, VIP), ("VI_2", 52, "198.18.0.101")))
        return f'[api]\nlisten = "127.0.0.1:{API_PORT}"\n{chk}{inst}\n[vrrp.sync_groups.G]\ngroup = ["VI_1", "VI_2"]\n'

    h1 = start_herder(d1, conf(150, "198.18.0.2", "198.18.0.3", True))
    h2 = start_herder(d2, conf(100, "198.18.0.3", "198.18.0.2", False))
    for name in ("VI_1", "VI_2"):
        wait_state(d1, "MASTER", 3, name)
        wait_for(f"dir2 {name} to follow", lambda n=name: inst(d2, n)["master"] == "198.18.0.2", 3)
    s1 = status(d1)
    assert s1["sync_groups"]["G"]["state"] == "MASTER"
    assert s1["instances"]["VI_1"]["unicast_peers"] == ["198.18.0.3"]
    assert s1["sockets"][0]["joined"] is False  # unicast only: no multicast group joined
    assert set(vips(d1)) >= {VIP, "198.18.0.101"}

    flag.unlink()  # VI_2's script fails (weight 0 in a sync group: FAULT), VI_1 follows
    for name in ("VI_1", "VI_2"):
        wait_state(d2, "MASTER", 3, name)
        wait_state(d1, "FAULT", 1, name)
    assert inst(d1, "VI_1")["faults"] == ["sync group G: VI_2 in fault"]
    assert not {VIP, "198.18.0.101"} & set(vips(d1))
    flag.write_text("ok\n")
    for name in ("VI_1", "VI_2"):
        wait_state(d1, "MASTER", 3, name)
    h1.stop()
    h2.stop()
