"""Node helpers (run, start with real PIDs, serve_http, neighbours, capture, traffic), two labs
at once, custom topologies, and the pytest plugin's own behaviour."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from herder.lab import Lab, LabError
from herder.lab.netns import lab_namespaces
from herder.lab.topology import parse_topology
from herder.proc import python_executable

pytestmark = pytest.mark.netns


def header(lab: Lab, node: str, url: str, name: str) -> str:
    out = lab.node(node).run(["curl", "-s", "-m", "2", "-D", "-", "-o", "/dev/null", url]).stdout
    for line in out.splitlines():
        k, _, v = line.partition(":")
        if k.lower() == name.lower():
            return v.strip()
    raise AssertionError(f"no {name} in {out!r}")


def netns_inode(netns: str) -> int:
    return os.stat(f"/run/netns/{netns}").st_ino


def test_start_keeps_the_real_pid_inside_the_node(lab_up):
    lab = lab_up("flat", start_processes=False)
    rs1 = lab.node("rs1")
    child = rs1.start([python_executable(), "-c", "import time; time.sleep(30)"], name="sleeper")
    cmdline = open(f"/proc/{child.pid}/cmdline", "rb").read().split(b"\0")
    assert cmdline[0] == python_executable().encode()  # the interpreter itself, not `ip` or a shim
    assert os.stat(f"/proc/{child.pid}/ns/net").st_ino == netns_inode(rs1.netns)
    assert os.getpgid(child.pid) == child.pid
    assert [p["pid"] for p in lab.processes() if p["name"] == "sleeper"] == [child.pid]
    child.stop()
    assert not child.alive()


def test_serve_http_answers_with_the_node_name_and_counts_requests(lab_up):
    lab = lab_up("flat", start_processes=False)
    lab.node("rs2").serve_http(8080)
    lab.node("rs3").serve_http(8080, name="custom")
    client = lab.node("client")
    rep = client.requests("http://198.18.0.12:8080/", count=5)
    assert rep.counts == {"rs2": 5} and not rep.errors
    assert rep.servers == ["rs2"] * 5
    assert client.requests("http://198.18.0.13:8080/x?y=1", count=1).counts == {"custom": 1}
    assert header(lab, "client", "http://198.18.0.12:8080/", "X-Herder-Peer").startswith("198.18.0.10:")
    down = client.requests("http://198.18.0.11:8080/", count=2, timeout=0.5)
    assert down.counts == {} and len(down.errors) == 2 and "Refused" in down.errors[0].error


def test_requests_rotate_source_addresses(lab_up):
    lab = lab_up("flat")
    client = lab.node("client")
    client.run(["ip", "addr", "add", "198.18.0.20/24", "dev", "eth0"])
    rep = client.requests("http://198.18.0.11/", count=4, sources=["198.18.0.10", "198.18.0.20"])
    assert rep.counts == {"rs1": 4}
    assert [r.source for r in rep.results] == ["198.18.0.10", "198.18.0.20"] * 2


def test_neighbours_show_the_peer_mac_after_traffic(lab_up):
    lab = lab_up("flat", start_processes=False)
    client, rs1 = lab.node("client"), lab.node("rs1")
    assert client.ping(rs1.address) == 64
    entries = {n.address: n for n in client.neighbours()}
    assert entries[rs1.address].lladdr == rs1.mac("eth0")
    assert entries[rs1.address].dev == "eth0"


def test_capture_sees_arp_and_the_echo_exchange(lab_up):
    lab = lab_up("flat", start_processes=False)
    client, director = lab.node("client"), lab.node("director")
    with director.capture("arp or icmp") as cap:
        client.run(["ip", "neigh", "flush", "all"])
        assert client.ping(director.address) == 64
    lines = cap.lines()
    assert any("Request who-has 198.18.0.2 tell 198.18.0.10" in line for line in lines), lines
    assert cap.count("icmp[icmptype] == icmp-echoreply") == 1
    assert client.mac("eth0") in " ".join(lines)  # -e: link-layer addresses are shown


def test_switch_capture_sees_frames_between_nodes(lab_up):
    lab = lab_up("flat", start_processes=False)
    with lab.switch.capture("icmp", iface="lan") as cap:
        lab.node("rs1").ping("198.18.0.13")
    assert cap.count() == 2


def test_long_lived_connections_report_every_break(lab_up):
    lab = lab_up("flat", start_processes=False)
    server = lab.node("rs2").serve_http(8080, echo_ports=[9001])
    client = lab.node("client")
    calm = client.connections("198.18.0.12", 9001, count=3, duration=0.5, interval=0.05)
    assert calm.unbroken
    assert [c.servers for c in calm.connections] == [["rs2"]] * 3
    assert all(c.answered == c.sent > 3 for c in calm.connections)

    run = client.connections("198.18.0.12", 9001, count=3, duration=1.5, interval=0.05, timeout=0.3,
                             background=True)
    time.sleep(0.5)
    server.stop()
    rep = run.wait()
    broken = {b.conn for b in rep.breaks}
    assert broken == {0, 1, 2}
    first = {}
    for b in rep.breaks:
        first.setdefault(b.conn, b)
    assert {b.kind for b in first.values()} <= {"eof", "error"}
    assert all(0.3 < b.t_s < 1.0 for b in first.values()), first
    # reconnect attempts after the stop fail and are reported too
    assert any(b.kind == "error" and "Refused" in b.detail for b in rep.breaks)


def test_module_scoped_labs_are_shared(lab_up_module):
    lab = lab_up_module("vrrp")
    assert lab.node("dir2").ping("198.18.0.2") == 64


def test_two_labs_at_once_do_not_interfere(lab_up):
    a = lab_up("flat")
    b = lab_up("flat")
    assert set(a.namespaces).isdisjoint(b.namespaces)
    url = "http://198.18.0.11/"
    assert header(a, "client", url, "X-Herder-Lab") == a.name
    assert header(b, "client", url, "X-Herder-Lab") == b.name
    # traffic in A is invisible in B, even on B's switch
    with b.switch.capture("", iface="lan") as cap:
        assert a.node("client").requests(url, count=5).counts == {"rs1": 5}
        assert a.node("client").ping("198.18.0.13") == 64
    assert cap.count("host 198.18.0.11 or host 198.18.0.13") == 0
    # removing A leaves B whole
    a.down()
    assert not lab_namespaces(a.name)
    assert sorted(lab_namespaces(b.name)[b.name]) == sorted(b.namespaces)
    assert all(p["alive"] for p in b.processes())
    assert b.node("client").requests(url, count=3).counts == {"rs1": 3}


def test_point_to_point_topology_from_a_dict(lab_up):
    topo = parse_topology({
        "name": "p2p",
        "nodes": {
            "left": {"interfaces": {"eth0": {"peer": "right.eth0", "addresses": ["198.18.7.1/30"],
                                             "mac": "02:00:00:00:07:01"}}},
            "right": {"interfaces": {"eth0": {"addresses": ["198.18.7.2/30"]},
                                     "lo": {"addresses": ["198.18.8.1/32"]}},
                      "serve": {"http": [8000]}},
        },
    })
    topo = parse_topology({**topo.data, "nodes": {**topo.data["nodes"], "left": {
        **topo.data["nodes"]["left"], "routes": ["198.18.8.1/32 via 198.18.7.2"]}}})
    lab = lab_up(topo)
    print(f"\nlab {lab.name} (p2p) up in {lab.up_s:.2f} s")
    left = lab.node("left")
    assert left.mac("eth0") == "02:00:00:00:07:01"
    assert left.ping("198.18.7.2") == 64
    assert left.requests("http://198.18.8.1:8000/", count=1).counts == {"right": 1}
    assert lab.switch.run(["ip", "-br", "link"]).stdout.split() == ["lo", "UNKNOWN", "00:00:00:00:00:00",
                                                                     "<LOOPBACK,UP,LOWER_UP>"]


def test_failed_bring_up_leaves_nothing(lab_up):
    topo = parse_topology({
        "name": "broken",
        "bridges": {"lan": {}},
        "nodes": {"a": {"interfaces": {"eth0": {"bridge": "lan", "addresses": ["198.18.0.1/24"]}},
                        "processes": [{"name": "dies", "argv": ["false"], "ready_port": 80}]}},
    })
    name = f"f{os.getpid() % 100000}"
    with pytest.raises(LabError, match=r"dies@a \(pid \d+\) exited with status 1"):
        Lab.up(topo, name=name)
    assert not lab_namespaces(name)
    bad_sysctl = parse_topology({"name": "b2", "nodes": {"a": {"sysctls": {"net.ipv4.no_such_key": 1}}}})
    with pytest.raises(LabError, match="sysctls failed"):
        Lab.up(bad_sysctl, name=name)
    assert not lab_namespaces(name)


PLUGIN_TESTS = '''
import os
import pytest

@pytest.mark.netns
def test_fails_after_building(lab_up):
    lab = lab_up("flat", start_processes=False)
    open(os.environ["LAB_NAME_FILE"], "w").write(lab.name)
    assert False, "deliberate"

def test_unmarked(lab_up):
    lab_up("flat")
'''


def run_pytest(tmp_path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {**os.environ, "LAB_NAME_FILE": str(tmp_path / "lab_name")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "herder.lab.pytest_plugin", "-p", "no:cacheprovider", "-rs", "-q",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)


def test_plugin_tears_down_after_a_failing_test_and_rejects_unmarked_tests(lab_up, tmp_path):
    res = run_pytest(tmp_path, {"test_inner.py": PLUGIN_TESTS})
    assert res.returncode == 1, res.stdout
    assert "1 failed, 1 error" in res.stdout, res.stdout
    assert "deliberate" in res.stdout
    assert "is not marked netns" in res.stdout
    name = (tmp_path / "lab_name").read_text()
    assert not lab_namespaces(name), "the failing test's lab was left behind"


def test_plugin_skips_with_a_reason_when_not_root(lab_up, tmp_path):
    res = run_pytest(tmp_path, {
        "conftest.py": "import os\nos.geteuid = lambda: 1000\n",
        "test_inner.py": "import pytest\n\n@pytest.mark.netns\ndef test_x(lab_up):\n    lab_up('flat')\n",
    })
    assert res.returncode == 0, res.stdout
    assert "1 skipped" in res.stdout
    assert "need root" in res.stdout


def test_labs_of_a_killed_run_are_removed_when_the_next_run_starts(lab_up, tmp_path):
    killed = run_pytest(tmp_path, {"test_inner.py": """
        import os, signal, pytest

        @pytest.mark.netns
        def test_dies(lab_up):
            lab = lab_up("distributed")
            open(os.environ["LAB_NAME_FILE"], "w").write(lab.name)
            os.kill(os.getpid(), signal.SIGKILL)
        """})
    assert killed.returncode == -9
    name = (tmp_path / "lab_name").read_text()
    assert lab_namespaces(name), "the killed run's lab should still be there"
    (tmp_path / "test_inner.py").write_text("def test_nothing():\n    pass\n")
    assert run_pytest(tmp_path, {}).returncode == 0
    assert not lab_namespaces(name)
