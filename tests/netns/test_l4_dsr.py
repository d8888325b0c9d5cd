"""L4 direct server return through nftables on a lab: replies bypass the director; Maglev
(mh) removal moves only the removed server's flows.

The real servers are prepared with ``herder realserver setup`` (VIP on lo, no ARP for it).
"""

from __future__ import annotations

import time

import pytest
from l4_lab import VIP, Director, herder, map_values, wait_for

pytestmark = pytest.mark.netns

CONFIG = f"""\
[l4]
backend = "nft"
vip_device = "eth0"

[services.www]
mode = "tcp"
listen = "{VIP}:80"
pool = "www"
forward = "dr"
scheduler = "mh"
hash_key = "source"

[services.echo]
mode = "tcp"
listen = "{VIP}:9000"
pool = "echo"
forward = "dr"
scheduler = "mh"

[pools.www]
{{www}}
[pools.echo]
{{echo}}
"""


def servers(pool: str, port: int, names: list[str]) -> str:
    return "\n".join(f'[[pools.{pool}.servers]]\nname = "{n}"\naddress = "198.18.0.1{n[2:]}:{port}"\n'
                     for n in names)


def config(names: list[str]) -> str:
    return CONFIG.format(www=servers("www", 80, names), echo=servers("echo", 9000, names))


def _dsr_lab(lab_up):
    lab = lab_up("flat", start_processes=False)
    for rs in ("rs1", "rs2", "rs3"):
        node = lab.node(rs)
        out = herder(node, "realserver", "setup", "--vip", VIP).stdout
        assert f"added {VIP}/32 to lo" in out and "arp_ignore: 0 -> 1" in out, out
        node.serve_http(80, echo_ports=[9000])
    return lab


def _teardown(lab) -> None:
    for rs in ("rs1", "rs2", "rs3"):
        out = herder(lab.node(rs), "realserver", "teardown", "--vip", VIP).stdout
        assert f"removed {VIP}/32 from lo" in out and "arp_ignore: 1 -> 0" in out, out


def test_dsr_replies_bypass_the_director(lab_up, tmp_path):
    lab = _dsr_lab(lab_up)
    d = Director(lab, tmp_path, config(["rs1", "rs2", "rs3"]))
    client, director = lab.node("client"), lab.node("director")
    sources = [f"198.18.0.{150 + i}" for i in range(24)]
    for s in sources:
        client.run(["ip", "addr", "add", f"{s}/24", "dev", "eth0"])
    try:
        with director.capture(f"src host {VIP} and tcp", iface="eth0") as replies, \
                director.capture(f"dst host {VIP} and tcp port 80", iface="eth0") as requests:
            report = client.requests(f"http://{VIP}/", count=48, timeout=2, sources=sources)
        assert not report.errors, report.errors[:3]
        assert len(report.counts) >= 2, report.counts
        assert requests.count() > 0  # the director did see the requests...
        assert replies.count() == 0, replies.lines()[:5]  # ...and not one reply
        # every source stays on one server (hash of the source address, fixed seed)
        by_source: dict[str, set[str]] = {}
        for r in report.results:
            by_source.setdefault(r.source, set()).add(r.server)
        assert all(len(v) == 1 for v in by_source.values())
        # the real servers, not the director, answer ARP for nothing: only the director owns the VIP
        client.run(["ip", "neigh", "flush", "dev", "eth0"])
        client.requests(f"http://{VIP}/", count=1, timeout=2)
        vip_macs = {n.lladdr for n in client.neighbours() if n.address == VIP}
        assert vip_macs == {director.mac("eth0")}
    except AssertionError:
        print(d.log())
        raise
    finally:
        d.stop()
        _teardown(lab)


def test_mh_removal_moves_only_that_servers_flows(lab_up, tmp_path):
    lab = _dsr_lab(lab_up)
    d = Director(lab, tmp_path, config(["rs1", "rs2", "rs3"]))
    client, director = lab.node("client"), lab.node("director")
    sources = [f"198.18.0.{150 + i}" for i in range(40)]
    for s in sources:
        client.run(["ip", "addr", "add", f"{s}/24", "dev", "eth0"])
    try:
        before = client.requests(f"http://{VIP}/", count=40, timeout=2, sources=sources)
        assert not before.errors and set(before.counts) == {"rs1", "rs2", "rs3"}, before.counts
        was = {r.source: r.server for r in before.results}
        # long-lived flows through the removal
        run = client.connections(VIP, 9000, count=12, duration=2.5, interval=0.02, timeout=0.5, background=True)
        time.sleep(0.8)
        d.reload(config(["rs1", "rs3"]))
        wait_for(lambda: len(map_values(director, "netdev herder_dsr", "fwd_to")) == 4, 5, "rs2 leaving")
        report = run.wait()
        after = client.requests(f"http://{VIP}/", count=40, timeout=2, sources=sources)
        assert not after.errors
        now = {r.source: r.server for r in after.results}
        moved_others = [s for s in sources if was[s] != "rs2" and now[s] != was[s]]
        assert all(now[s] in ("rs1", "rs3") for s in sources)
        assert len(moved_others) <= 1, moved_others  # Maglev moves ~0.6% of the survivors' slots
        # established flows: those on rs1 and rs3 never noticed; those on rs2 broke (rs2 left)
        on_rs2 = {c.conn for c in report.connections if c.servers and c.servers[0] == "rs2"}
        broken = {b.conn for b in report.breaks}
        assert broken <= on_rs2, report.breaks[:5]
        assert on_rs2 <= broken  # rs2's flows were moved (and reset by their new server)
        assert all(c.answered > 10 for c in report.connections if c.conn not in on_rs2)
    except AssertionError:
        print(d.log())
        raise
    finally:
        d.stop()
        _teardown(lab)
