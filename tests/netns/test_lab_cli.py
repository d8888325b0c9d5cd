"""``herder lab`` as a user runs it: up, status, exec, down; nothing left behind; two labs apart.

The command runs as a subprocess (``python -m herder lab ...``), so ``down`` works from
the state another process left, as it does for a user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from herder.lab.lab import state_root
from herder.lab.netns import NETNS_DIR, lab_namespaces, netns_name, pids_in_namespaces
from herder.lab.pytest_plugin import netns_unavailable
from herder.lab.topology import SWITCH, resolve_topology
from herder.proc import pid_running

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def _need_netns():
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


def herder_lab(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "herder", "lab", *args], capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"herder lab {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture
def lab_name():
    """A unique lab name, removed whatever the test did."""
    name = f"c{os.getpid() % 100000}{int(time.monotonic() * 1000) % 1000}"
    yield name
    if lab_namespaces(name) or (state_root() / name).exists():
        subprocess.run([sys.executable, "-m", "herder", "lab", "down", name], capture_output=True, timeout=30)


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def ns_identities(names: list[str]) -> set[tuple[int, int]]:
    out = set()
    for ns in names:
        st = os.stat(os.path.join(NETNS_DIR, ns))
        out.add((st.st_dev, st.st_ino))
    return out


def processes_in(identities: set[tuple[int, int]]) -> list[int]:
    """Every process whose network namespace is one of ``identities`` (by inode, not name)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in identities:
                found.append(int(entry))
    return found


def test_up_status_exec_down_leaves_no_namespace_link_or_process(lab_name):
    topo = resolve_topology("flat")
    our_names = {link.port for link in topo.links if link.port} | {b.name for b in topo.bridges}
    links_before = root_links()
    ns_before = set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()
    print(f"\nbefore: {len(ns_before)} namespaces, root links {sorted(links_before)}")

    t0 = time.monotonic()
    up = herder_lab("up", "flat", "--name", lab_name, "--json")
    print(f"herder lab up flat: {time.monotonic() - t0:.2f} s wall (lab reports {json.loads(up.stdout)['up_s']:.2f} s)")
    info = json.loads(up.stdout)
    namespaces = info["namespaces"]
    assert sorted(namespaces) == sorted([netns_name(lab_name, SWITCH), *(netns_name(lab_name, n) for n in topo.node_names)])
    assert set(lab_namespaces(lab_name)[lab_name]) == set(namespaces)
    assert not (root_links() & our_names), "a lab interface appeared in the root namespace"
    recorded = [(p["pid"], p["start_time"]) for p in info["processes"]]
    assert len(recorded) == 3 and all(p["alive"] for p in info["processes"])
    idents = ns_identities(namespaces)
    inside = pids_in_namespaces(namespaces)
    assert sum(len(v) for v in inside.values()) >= 3
    # the recorded PID is the server itself (no shim, no `ip` wrapper), inside its node
    for p in info["processes"]:
        cmdline = open(f"/proc/{p['pid']}/cmdline", "rb").read().split(b"\0")
        assert b"herder.lab.serve" in cmdline and os.path.basename(cmdline[0]).startswith(b"python")
        assert p["pid"] in inside[netns_name(lab_name, p["node"])]

    status = herder_lab("status", "--json")
    mine = [s for s in json.loads(status.stdout) if s["name"] == lab_name]
    assert mine and mine[0]["topology"] == "flat" and not mine[0]["orphaned"]
    assert "rs2" in herder_lab("status", lab_name).stdout

    assert herder_lab("exec", "--lab", lab_name, "client", "--", "curl", "-s", "http://198.18.0.12/").stdout == "rs2\n"
    assert herder_lab("exec", "--lab", lab_name, "rs1", "--", "sh", "-c", "exit 3", check=False).returncode == 3
    fdb = herder_lab("exec", "--lab", lab_name, "switch", "--", "bridge", "link", "show").stdout
    assert "rs1-eth0" in fdb and "master lan" in fdb
    bad = herder_lab("exec", "--lab", lab_name, "nosuch", "--", "true", check=False)
    assert bad.returncode == 1 and "no node 'nosuch'" in bad.stderr

    down = herder_lab("down", lab_name)
    assert f"lab {lab_name} down: 6 namespaces removed" in down.stdout

    assert not lab_namespaces(lab_name)
    assert not (set(os.listdir(NETNS_DIR)) & set(namespaces))
    links_after = root_links()
    print(f"after: root links {sorted(links_after)}")
    assert not (links_after - links_before) & our_names
    assert not [pid for pid, start in recorded if pid_running(pid, start)], "a lab process survived"
    assert processes_in(idents) == [], "a process still lives in a deleted lab namespace"
    assert not (state_root() / lab_name).exists()
    assert not [s for s in json.loads(herder_lab("status", "--json").stdout) if s["name"] == lab_name]


def test_down_cleans_up_after_a_lost_state_file(lab_name):
    """A crash that lost the state: down finds namespaces by prefix and processes by namespace."""
    info = json.loads(herder_lab("up", "distributed", "--name", lab_name, "--json").stdout)
    idents = ns_identities(info["namespaces"])
    pids = [(p["pid"], p["start_time"]) for p in info["processes"]]
    (state_root() / lab_name / "state.json").unlink()

    status = json.loads(herder_lab("status", "--json").stdout)
    assert [s["orphaned"] for s in status if s["name"] == lab_name] == [True]
    herder_lab("down", lab_name)
    assert not lab_namespaces(lab_name)
    assert not [pid for pid, start in pids if pid_running(pid, start)]
    assert processes_in(idents) == []


def test_down_removes_a_half_built_lab(lab_name):
    """What a crash in the middle of `up` leaves (some namespaces, a stray process) goes too."""
    for node in ("switch", "client"):
        subprocess.run(["ip", "netns", "add", netns_name(lab_name, node)], check=True)
    stray = subprocess.Popen(["ip", "netns", "exec", netns_name(lab_name, "client"), "sleep", "30"],
                             start_new_session=True)
    try:
        herder_lab("down", lab_name)
        assert stray.wait(5) is not None
        assert not lab_namespaces(lab_name)
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


def test_cli_refuses_what_it_cannot_do(lab_name, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[nodes.a.interfaces.eth0]\nbridge = "lan"\naddresses = ["10.0.0.1/24"]\n')
    res = herder_lab("up", str(bad), "--name", lab_name, check=False)
    assert res.returncode == 1 and "outside the lab range" in res.stderr
    assert not lab_namespaces(lab_name)

    herder_lab("up", "flat", "--name", lab_name, "--no-processes")
    again = herder_lab("up", "flat", "--name", lab_name, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    second = f"{lab_name}b"
    try:
        herder_lab("up", "vrrp", "--name", second, "--no-processes")
        # several labs up: down without a name must not guess
        res = herder_lab("down", check=False)
        assert res.returncode == 1 and "several labs are up" in res.stderr
        res = herder_lab("exec", "client", "--", "true", check=False)
        assert res.returncode == 1 and "give --lab NAME" in res.stderr
    finally:
        herder_lab("down", second)
    herder_lab("down", lab_name)


def test_shell_and_capture_run_in_the_node(lab_name):
    herder_lab("up", "flat", "--name", lab_name, "--no-processes")
    shell = subprocess.run([sys.executable, "-m", "herder", "lab", "shell", "--lab", lab_name, "rs2"],
                           input="ip -br addr show dev eth0\necho lab=$HERDER_LAB node=$HERDER_LAB_NODE\nexit 0\n",
                           capture_output=True, text=True, timeout=30)
    assert shell.returncode == 0, shell.stderr
    assert "198.18.0.12/24" in shell.stdout and f"lab={lab_name} node=rs2" in shell.stdout
    cap = subprocess.Popen([sys.executable, "-m", "herder", "lab", "capture", "--lab", lab_name, "rs1", "icmp", "-c", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        out = ""
        while cap.poll() is None and time.monotonic() < deadline:
            herder_lab("exec", "--lab", lab_name, "client", "--", "ping", "-c", "1", "-W", "1", "198.18.0.11",
                       check=False)
            time.sleep(0.2)
        out, err = cap.communicate(timeout=5)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert cap.returncode == 0, err
    assert "198.18.0.10 > 198.18.0.11: ICMP echo request" in out
    herder_lab("down", lab_name)


def test_help_has_descriptions_and_examples():
    for sub in ("up", "down", "status", "exec", "shell", "capture", "topologies"):
        text = herder_lab(sub, "--help").stdout
        assert "example" in text, sub
    assert "flat" in herder_lab("topologies").stdout
