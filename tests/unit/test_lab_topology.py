"""Lab topologies: parsing and validation of the files, and the build plan (pure, no root)."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address, IPv4Interface

import pytest

from herder.lab.netns import LabError, build_plan, check_lab_name, netns_name
from herder.lab.topology import (
    LAB_NETWORK,
    TopologyError,
    load_topology,
    parse_topology,
    resolve_topology,
    shipped_topologies,
)
from herder.lab.traffic import ConnectionsReport, RequestsReport, parse_report, report_json, run_requests

pytestmark = pytest.mark.unit

SHIPPED = ["distributed", "flat", "regions", "routed", "vrrp"]


def minimal() -> dict:
    """A valid two-node topology to break in the error cases."""
    return {
        "name": "mini",
        "bridges": {"lan": {}},
        "nodes": {
            "a": {"interfaces": {"eth0": {"bridge": "lan", "addresses": ["198.18.0.1/24"]}}},
            "b": {
                "interfaces": {"eth0": {"bridge": "lan", "addresses": ["198.18.0.2/24"]}},
                "routes": ["198.18.5.0/24 via 198.18.0.1"],
            },
        },
    }


# --- the shipped files ------------------------------------------------------------------

def test_every_shipped_topology_is_listed_and_loads():
    assert sorted(shipped_topologies()) == SHIPPED
    for name in SHIPPED:
        t = resolve_topology(name)
        assert t.name == name
        assert t.description
        assert t.nodes


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_addresses_are_in_the_lab_range_and_fit_names(name):
    t = resolve_topology(name)
    for n in t.nodes:
        for a in n.addresses:
            assert a.ip in LAB_NETWORK
        for r in n.routes:
            assert r.via is None or r.via in LAB_NETWORK
    for link in t.links:
        if link.port:
            assert len(link.port) <= 15


def test_flat_is_client_director_and_three_real_servers_on_one_lan():
    t = resolve_topology("flat")
    assert t.node_names == ["client", "director", "rs1", "rs2", "rs3"]
    assert [b.name for b in t.bridges] == ["lan"]
    assert {str(t.node(n).address) for n in ("rs1", "rs2", "rs3")} == {"198.18.0.11", "198.18.0.12", "198.18.0.13"}
    assert t.node("client").address == IPv4Address("198.18.0.10")
    assert ("net.ipv4.ip_forward", "1") in t.node("director").sysctls
    for rs in ("rs1", "rs2", "rs3"):
        (serve,) = t.node(rs).processes
        assert serve.ready_ports == (80, 9000)
        assert serve.argv[:3] == ("{python}", "-m", "herder.lab.serve")
    assert t.vars["vip"] == "198.18.0.100"


def test_routed_clients_and_servers_share_no_bridge_only_the_router_joins_them():
    t = resolve_topology("routed")
    bridges_of = {n.name: {i.bridge for i in n.interfaces} for n in t.nodes}
    assert bridges_of["router"] == {"clients", "servers"}
    for c in ("client1", "client2"):
        assert bridges_of[c] == {"clients"}
        assert [str(r) for r in t.node(c).routes] == ["default via 198.18.1.1"]
    for s in ("dir1", "dir2", "rs1", "rs2", "rs3"):
        assert bridges_of[s] == {"servers"}
    assert ("net.ipv4.ip_forward", "1") in t.node("router").sysctls


def test_vrrp_has_two_directors_and_no_vip_configured():
    t = resolve_topology("vrrp")
    assert [n.name for n in t.nodes_with_role("director")] == ["dir1", "dir2"]
    vip = IPv4Address(t.vars["vip"])
    assert all(a.ip != vip for n in t.nodes for a in n.addresses)


def test_distributed_nodes_share_the_vip_on_lo_and_do_not_answer_arp_for_it():
    t = resolve_topology("distributed")
    nodes = t.nodes_with_role("node")
    assert [n.name for n in nodes] == t.vars["nodes"].split()
    for n in nodes:
        assert n.interface("lo").addresses == (IPv4Interface(t.vars["vip"] + "/32"),)
        assert ("net.ipv4.conf.all.arp_ignore", "1") in n.sysctls
        assert ("net.ipv4.conf.all.arp_announce", "2") in n.sysctls


def test_regions_have_distinct_client_prefixes_and_a_server_group_each():
    t = resolve_topology("regions")
    regions = t.vars["regions"].split()
    assert len(regions) >= 2
    prefixes = set()
    for r in regions:
        prefix = IPv4Interface(t.vars[f"{r}_prefix"]).network
        prefixes.add(prefix)
        members = [n for n in t.nodes if n.region == r]
        clients = [n for n in members if n.role == "client"]
        servers = [n for n in members if n.role == "real-server"]
        assert clients and len(servers) >= 2
        assert all(n.address in prefix for n in members)
    assert len(prefixes) == len(regions)
    assert t.node("dns").address == IPv4Address(t.vars["dns"])


# --- the model ----------------------------------------------------------------------------

def test_point_to_point_link_declared_on_one_side():
    data = minimal()
    data["nodes"]["c"] = {"interfaces": {"eth0": {"peer": "a.eth1", "addresses": ["198.18.1.2/30"]}},
                          "routes": ["default via 198.18.1.1"]}
    data["nodes"]["a"]["interfaces"]["eth1"] = {"addresses": ["198.18.1.1/30"]}
    t = parse_topology(data)
    p2p = [link for link in t.links if link.b is not None]
    assert len(p2p) == 1
    assert {p2p[0].a, p2p[0].b} == {("a", "eth1"), ("c", "eth0")}
    assert p2p[0].port is None


def test_point_to_point_link_declared_on_both_sides_counts_once():
    data = minimal()
    data["nodes"]["a"]["interfaces"]["eth1"] = {"peer": "b.eth1", "addresses": ["198.18.1.1/30"]}
    data["nodes"]["b"]["interfaces"]["eth1"] = {"peer": "a.eth1", "addresses": ["198.18.1.2/30"]}
    assert len([link for link in parse_topology(data).links if link.b]) == 1


def test_loopback_addresses_may_be_shared_but_interface_addresses_not():
    data = minimal()
    for n in ("a", "b"):
        data["nodes"][n]["interfaces"]["lo"] = {"addresses": ["198.18.0.100/32"]}
    parse_topology(data)
    data["nodes"]["b"]["interfaces"]["eth0"]["addresses"] = ["198.18.0.1/24"]
    with pytest.raises(TopologyError, match="already used by a.eth0"):
        parse_topology(data)


def test_serve_shorthand_becomes_a_process_with_ready_ports():
    data = minimal()
    data["nodes"]["a"]["serve"] = {"http": [80, 8080], "echo": [9000]}
    (p,) = parse_topology(data).node("a").processes
    assert p.name == "serve"
    assert p.ready_ports == (80, 8080, 9000)
    assert "--echo" in p.argv and "9000" in p.argv


def test_load_topology_names_the_file_in_errors(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[nodes.a.interfaces.eth0]\nbridge = "nope"\naddresses = ["198.18.0.1/24"]\n')
    with pytest.raises(TopologyError, match=r"bad\.toml: .*no bridge 'nope'"):
        load_topology(f)
    f.write_text("nodes = [")
    with pytest.raises(TopologyError, match=r"bad\.toml"):
        load_topology(f)


def test_resolve_accepts_a_path_and_rejects_unknown_names(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[bridges.lan]\n[nodes.a.interfaces.eth0]\nbridge = "lan"\naddresses = ["198.18.0.1/24"]\n')
    assert resolve_topology(str(f)).name == "mine"
    with pytest.raises(TopologyError, match="no shipped topology 'nosuch'"):
        resolve_topology("nosuch")


def _set(path: str, value):
    def edit(d: dict) -> None:
        keys = path.split("/")
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = value
    return edit


def _delete(path: str):
    def edit(d: dict) -> None:
        keys = path.split("/")
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return edit


# (description, edit of minimal(), expected message fragment)
INVALID = [
    ("unknown top-level key", _set("nodez", {}), "unknown key(s) nodez"),
    ("unknown node key", _set("nodes/a/rotues", []), "nodes.a: unknown key(s) rotues"),
    ("unknown interface key", _set("nodes/a/interfaces/eth0/adress", "x"), "unknown key(s) adress"),
    ("address outside 198.18.0.0/15", _set("nodes/a/interfaces/eth0/addresses", ["10.0.0.1/24"]), "outside the lab range"),
    ("not an address", _set("nodes/a/interfaces/eth0/addresses", ["198.18.0.300/24"]), "nodes.a.interfaces.eth0.addresses[0]"),
    ("network address", _set("nodes/a/interfaces/eth0/addresses", ["198.18.0.0/24"]), "is a network address"),
    ("gateway not on-link", _set("nodes/b/routes", ["default via 198.18.9.1"]), "not on any of the node's subnets"),
    ("route outside the range", _set("nodes/b/routes", ["10.0.0.0/8 via 198.18.0.1"]), "outside the lab range"),
    ("route without via or dev", _set("nodes/b/routes", ["default"]), "needs 'via <gateway>' or 'dev"),
    ("route with junk", _set("nodes/b/routes", ["default via 198.18.0.1 metric 5"]), "unexpected 'metric'"),
    ("route dev unknown", _set("nodes/b/routes", ["default dev eth9"]), "dev eth9 is not an interface"),
    ("unknown bridge", _set("nodes/a/interfaces/eth0/bridge", "wan"), "no bridge 'wan'"),
    ("unused bridge", _set("bridges/spare", {}), "spare not used by any interface"),
    ("interface without link", _set("nodes/a/interfaces/eth1", {"addresses": ["198.18.1.1/24"]}),
     'give bridge = "..." or peer'),
    ("bridge and peer", _set("nodes/a/interfaces/eth0/peer", "b.eth0"), "either bridge or peer"),
    ("peer to a bridged interface", _set("nodes/a/interfaces/eth1", {"peer": "b.eth0"}), "not free for a point-to-point"),
    ("peer to a missing node", _set("nodes/a/interfaces/eth1", {"peer": "zz.eth0"}), "no node 'zz'"),
    ("peer to a missing interface", _set("nodes/a/interfaces/eth1", {"peer": "b.eth7"}), "node b has no interface 'eth7'"),
    ("peer to itself", _set("nodes/a/interfaces/eth1", {"peer": "a.eth2"}), "cannot be linked to itself"),
    ("peer without dot", _set("nodes/a/interfaces/eth1", {"peer": "b"}), "expected 'node.interface'"),
    ("lo with a bridge", _set("nodes/a/interfaces/lo", {"bridge": "lan"}), "lo takes addresses only"),
    ("multicast mac", _set("nodes/a/interfaces/eth0/mac", "03:00:00:00:00:01"), "unicast MAC"),
    ("reserved node name", lambda d: d["nodes"].update(switch=d["nodes"].pop("b")), "reserved"),
    ("node name too long", lambda d: d["nodes"].update(averyveryverylongname=d["nodes"].pop("b")), "at most 10"),
    ("node name with capitals", lambda d: d["nodes"].update(Bee=d["nodes"].pop("b")), "must match"),
    ("port name over 15 chars", lambda d: d["nodes"]["a"]["interfaces"].update(
        ethernetzero12=d["nodes"]["a"]["interfaces"].pop("eth0")), "exceed 15 characters"),
    ("no nodes", _set("nodes", {}), "at least one node"),
    ("bad sysctl key", _set("nodes/a/sysctls", {"ip_forward": 1}), "is not a sysctl key"),
    ("bad sysctl value", _set("nodes/a/sysctls", {"net.ipv4.ip_forward": [1]}), "expected an integer or a string"),
    ("serve without ports", _set("nodes/a/serve", {}), "give http and/or echo"),
    ("serve port twice", _set("nodes/a/serve", {"http": [80], "echo": [80]}), "listed twice"),
    ("serve port out of range", _set("nodes/a/serve", {"http": [0]}), "TCP port 1..65535"),
    ("process without argv", _set("nodes/a/processes", [{"name": "x"}]), "needs name and argv"),
    ("process with unknown placeholder", _set("nodes/a/processes", [{"name": "x", "argv": ["{pyhton}"]}]),
     "unknown placeholder(s) {pyhton}"),
    ("process names clash with serve", lambda d: d["nodes"]["a"].update(
        serve={"http": [80]}, processes=[{"name": "serve", "argv": ["true"]}]), "must be unique"),
    ("processes not an array", _set("nodes/a/processes", {"name": "x"}), "expected an array of tables"),
    ("ageing time negative", _set("bridges/lan/ageing_time", -1), "seconds >= 0"),
    ("ipv6 not a bool", _set("ipv6", "yes"), "ipv6: expected true or false"),
    ("addresses not a list", _set("nodes/a/interfaces/eth0/addresses", "198.18.0.1/24"), "expected a list of strings"),
    ("missing addresses key is fine but bad peer", _delete("nodes/a/interfaces/eth0/bridge"), 'give bridge = "..."'),
]


@pytest.mark.parametrize(("description", "edit", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_topologies_are_rejected_with_the_key_named(description, edit, message):
    data = copy.deepcopy(minimal())
    edit(data)
    with pytest.raises(TopologyError) as exc:
        parse_topology(data)
    assert message in str(exc.value), str(exc.value)


def test_placeholders_escape_braces():
    data = minimal()
    data["nodes"]["a"]["processes"] = [{"name": "x", "argv": ["{python}", "-c", "print({{1: 2}})"], "ready_port": 80}]
    (p,) = parse_topology(data).node("a").processes
    assert p.ready_ports == (80,)


# --- names and the build plan (pure) --------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "flat", "p1x2", "abcdefghijkl"])
def test_valid_lab_names(name):
    assert check_lab_name(name) == name


@pytest.mark.parametrize("name", ["", "1a", "a-b", "Flat", "abcdefghijklm", "a_b"])
def test_invalid_lab_names(name):
    with pytest.raises(LabError):
        check_lab_name(name)


def test_plan_creates_only_namespaces_from_the_root_and_everything_else_inside_them():
    t = resolve_topology("routed")
    steps = build_plan(t, "x")
    first = steps[0]
    assert first.netns is None and first.argv == ("ip", "-batch", "-")
    assert set(first.batch) == {f"netns add {netns_name('x', n)}" for n in ["switch", *t.node_names]}
    for s in steps[1:]:
        assert s.netns is not None or s.argv[:2] == ("ip", "-n"), s
        assert all(ns.startswith("hl-x-") for ns in [s.netns or s.argv[2]])


def test_plan_turns_bridge_netfilter_off_in_the_switch_before_building_bridges():
    steps = build_plan(resolve_topology("flat"), "x")
    sysctl = next(s for s in steps if s.netns == "hl-x-switch")
    assert "net.bridge.bridge-nf-call-iptables=0" in sysctl.argv
    bridges = next(s for s in steps if s.argv[:3] == ("ip", "-n", "hl-x-switch"))
    assert steps.index(sysctl) < steps.index(bridges)
    assert "link add lan type bridge mcast_snooping 0" in bridges.batch
    assert "link add rs1-eth0 type veth peer name eth0 netns hl-x-rs1" in bridges.batch
    assert "link set rs1-eth0 master lan" in bridges.batch


def test_plan_sets_node_sysctls_before_any_node_interface_goes_up():
    steps = build_plan(resolve_topology("flat"), "x")
    sysctl_at = max(i for i, s in enumerate(steps) if s.argv[0] == "sysctl" and s.netns != "hl-x-switch")
    up_at = min(i for i, s in enumerate(steps) if any(line.startswith("link set eth0 up") for line in s.batch))
    assert sysctl_at < up_at
    director = next(s for s in steps if s.netns == "hl-x-director")
    assert "net.ipv6.conf.all.disable_ipv6=1" in director.argv
    assert "net.ipv4.conf.eth0.send_redirects=0" in director.argv


def test_plan_adds_routes_after_addresses_and_link_up():
    steps = build_plan(resolve_topology("routed"), "x")
    (c1,) = [s for s in steps if s.argv[:3] == ("ip", "-n", "hl-x-client1")]
    assert list(c1.batch) == ["link set lo up", "addr add 198.18.1.10/24 dev eth0", "link set eth0 up",
                              "route add default via 198.18.1.1"]


def test_plan_keeps_ipv6_when_the_topology_asks():
    data = minimal()
    data["ipv6"] = True
    steps = build_plan(parse_topology(data), "x")
    assert not any("disable_ipv6" in " ".join(s.argv) for s in steps if s.netns != "hl-x-switch")


def test_plan_bridge_ageing_time_is_in_centiseconds():
    data = minimal()
    data["bridges"]["lan"] = {"ageing_time": 0}
    steps = build_plan(parse_topology(data), "x")
    assert any("link add lan type bridge mcast_snooping 0 ageing_time 0" in s.batch for s in steps)


# --- traffic reports (pure) -------------------------------------------------------------------

def test_traffic_reports_round_trip_through_json():
    rep = run_requests("http://198.18.0.1:1/", count=0)
    assert isinstance(parse_report(report_json(rep)), RequestsReport)
    conn = ConnectionsReport([], [], 0.0)
    back = parse_report(report_json(conn))
    assert isinstance(back, ConnectionsReport) and back.unbroken
    with pytest.raises(ValueError):
        parse_report('{"kind": "other"}')
