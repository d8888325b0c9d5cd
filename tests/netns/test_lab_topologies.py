"""Each shipped topology comes up, and its nodes reach each other as designed and not otherwise.

Bring-up times are reported (``record_property("up_s")`` and printed), never asserted.
Reachability is checked with ping TTLs: 64 is on-link, 63 means one router on the path.
"""

from __future__ import annotations

import pytest

from herder.lab import Lab

pytestmark = pytest.mark.netns

ONLINK, ONE_HOP = 64, 63


def report_up(lab: Lab, record_property) -> None:
    record_property("up_s", round(lab.up_s or 0.0, 3))
    print(f"\nlab {lab.name} ({lab.topology.name}, {len(lab.nodes)} nodes) up in {lab.up_s:.2f} s")


def answers(lab: Lab, src: str, address: str, count: int = 1) -> dict[str, int]:
    return lab.node(src).requests(f"http://{address}/", count=count, timeout=1.0).counts


def test_flat(lab_up, record_property):
    lab = lab_up("flat")
    report_up(lab, record_property)
    client = lab.node("client")
    for rs in ("rs1", "rs2", "rs3"):
        assert answers(lab, "client", lab.node(rs).address) == {rs: 1}
    for other in ("director", "rs1", "rs2", "rs3"):
        assert client.ping(lab.node(other).address) == ONLINK
    # the director reaches the servers too (it will forward to them)
    assert answers(lab, "director", "198.18.0.13") == {"rs3": 1}
    # the bridge lives in the switch namespace, with bridge netfilter off
    sw = lab.switch
    assert sw.run(["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]).stdout.strip() == "0"
    assert "lan" in sw.run(["ip", "-br", "link", "show", "type", "bridge"]).stdout
    assert not client.run(["ip", "-br", "link", "show", "type", "bridge"]).stdout.strip()
    # IPv6 is off unless the topology asks (quiet captures)
    assert "inet6" not in client.run(["ip", "addr"]).stdout


def test_routed_client_reaches_servers_only_through_the_router(lab_up, record_property):
    lab = lab_up("routed")
    report_up(lab, record_property)
    client, router = lab.node("client1"), lab.node("router")
    servers = ["dir1", "dir2", "rs1", "rs2", "rs3"]
    for s in servers:
        assert client.ping(lab.node(s).address) == ONE_HOP, s
    for rs in ("rs1", "rs2", "rs3"):
        assert answers(lab, "client1", lab.node(rs).address) == {rs: 1}
    assert client.ping(lab.node("client2").address) == ONLINK
    assert client.ping("198.18.1.1") == ONLINK
    # the client never resolved a server-LAN address on its own link
    assert {n.address for n in client.neighbours()} <= {"198.18.1.1", "198.18.1.11"}
    # without the router's forwarding there is no path at all
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    assert client.ping(lab.node("rs1").address, timeout=1) is None
    failed = client.requests(f"http://{lab.node('rs1').address}/", count=1, timeout=0.5)
    assert failed.counts == {} and len(failed.errors) == 1
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    assert client.ping(lab.node("rs1").address) == ONE_HOP


def test_vrrp(lab_up, record_property):
    lab = lab_up("vrrp")
    report_up(lab, record_property)
    client = lab.node("client")
    for d in ("dir1", "dir2"):
        assert client.ping(lab.node(d).address) == ONLINK
    for rs in ("rs1", "rs2", "rs3"):
        assert answers(lab, "client", lab.node(rs).address) == {rs: 1}
    # the VIP is nobody's until VRRP elects a master
    assert client.ping(lab.vars["vip"], timeout=1) is None


def test_distributed_nodes_hold_the_vip_but_none_answers_arp_for_it(lab_up, record_property):
    lab = lab_up("distributed")
    report_up(lab, record_property)
    client = lab.node("client")
    vip = lab.vars["vip"]
    for name in lab.vars["nodes"].split():
        node = lab.node(name)
        assert answers(lab, "client", node.address) == {name: 1}
        assert answers(lab, name, vip) == {name: 1}  # each node serves the VIP locally
    res = client.run(["arping", "-c", "1", "-w", "1", "-I", "eth0", vip], check=False, timeout=5)
    assert res.returncode != 0, res.stdout
    assert not [n for n in client.neighbours() if n.address == vip and n.lladdr]


def test_regions_clients_reach_their_region_on_link_and_the_rest_via_the_core(lab_up, record_property):
    lab = lab_up("regions")
    report_up(lab, record_property)
    regions = lab.vars["regions"].split()
    for r in regions:
        client = lab.node(f"{r}-client")
        for other in regions:
            rs = lab.node(f"{other}-rs1")
            assert client.ping(rs.address) == (ONLINK if other == r else ONE_HOP), (r, other)
        assert answers(lab, f"{r}-client", lab.node(f"{regions[-1]}-rs2").address) == {f"{regions[-1]}-rs2": 1}
        assert client.ping(lab.vars["dns"]) == ONE_HOP
    # the servers see each region's own source prefix (no NAT on the way)
    head = lab.node(f"{regions[0]}-client").run(
        ["curl", "-s", "-D", "-", "-o", "/dev/null", f"http://{lab.node(f'{regions[1]}-rs1').address}/"]).stdout
    assert f"X-Herder-Peer: {lab.node(f'{regions[0]}-client').address}:" in head
    lab.node("core").run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    assert lab.node(f"{regions[0]}-client").ping(lab.node(f"{regions[1]}-rs1").address, timeout=1) is None
