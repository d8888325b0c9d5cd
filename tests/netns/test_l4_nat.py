"""L4 NAT through nftables on a lab: the lecture's Table 1, health checks, and live pool changes.

Table 1 (two services on one VIP; weights 1 and 2; one server port-mapped to 8000)::

    TCP  VIP:80  -> rs1:80    weight 1
                 -> rs2:8000  weight 2
    TCP  VIP:21  -> rs2:21    weight 1

The servers on rs2 carry distinct names (``rs2-8000``, ``rs2-21``), so every answer says
which real server *and port* it came from.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from l4_lab import VIP, Director, map_values, wait_for

pytestmark = pytest.mark.netns

TABLE1 = f"""\
[herder]
log_level = "info"

[l4]
backend = "nft"
vip_device = "eth0"

[services.www]
mode = "tcp"
listen = "{VIP}:80"
pool = "www"
forward = "nat"
scheduler = "wrr"

[services.ftp]
mode = "tcp"
listen = "{VIP}:21"
pool = "ftp"
forward = "nat"
scheduler = "wrr"

[pools.www]
initial_state = "up"
[[pools.www.servers]]
name = "rs1"
address = "198.18.0.11:80"
weight = 1
[[pools.www.servers]]
name = "rs2"
address = "198.18.0.12:8000"
weight = 2
[[pools.www.checks]]
type = "tcp"
inter = "100ms"
rise = 1
fall = 1

[pools.ftp]
[[pools.ftp.servers]]
name = "rs2"
address = "198.18.0.12:21"
"""


def _nat_lab(lab_up):
    lab = lab_up("flat", start_processes=False)
    for rs in ("rs1", "rs2", "rs3"):  # same-subnet NAT: replies must go back through the director
        lab.node(rs).run(["ip", "route", "add", "198.18.0.10/32", "via", "198.18.0.2"])
    return lab


def test_table1_shares_ports_and_health(lab_up, tmp_path):
    lab = _nat_lab(lab_up)
    rs1 = lab.node("rs1").serve_http(80)
    lab.node("rs2").serve_http(8000, name="rs2-8000")
    lab.node("rs2").serve_http(21, name="rs2-21")
    d = Director(lab, tmp_path, TABLE1)
    client = lab.node("client")
    try:
        www = client.requests(f"http://{VIP}/", count=300, timeout=2)
        assert not www.errors, www.errors[:3]
        counts = www.counts
        assert set(counts) == {"rs1", "rs2-8000"}, counts
        assert abs(counts["rs1"] / 300 - 1 / 3) < 0.03 and abs(counts["rs2-8000"] / 300 - 2 / 3) < 0.03, counts
        ftp = client.requests(f"http://{VIP}:21/", count=20, timeout=2)
        assert ftp.counts == {"rs2-21": 20}

        # rs1 stops: its health check fails, the director removes it, rs2 takes everything
        rs1.stop()
        wait_for(lambda: len(map_values(client.lab.node("director"), "ip herder", "dnat_to")) == 2, 10,
                 "rs1 leaving the NAT map")
        after = client.requests(f"http://{VIP}/", count=30, timeout=2)
        assert after.counts == {"rs2-8000": 30}, after.counts

        # rs1 back: the check passes, its share returns
        lab.node("rs1").serve_http(80)
        wait_for(lambda: len(map_values(client.lab.node("director"), "ip herder", "dnat_to")) == 3, 10,
                 "rs1 back in the NAT map")
        back = client.requests(f"http://{VIP}/", count=60, timeout=2)
        assert not back.errors and back.counts == {"rs1": 20, "rs2-8000": 40}, back.counts
    except AssertionError:
        print(d.log())
        raise
    finally:
        d.stop()
    # at exit herder removed its tables and the VIP it added
    assert "herder" not in lab.node("director").run(["nft", "list", "tables"]).stdout
    assert VIP not in lab.node("director").run(["ip", "-4", "addr", "show", "dev", "eth0"]).stdout


ECHO = f"""\
[l4]
backend = "nft"
vip_device = "eth0"

[services.echo]
mode = "tcp"
listen = "{VIP}:9000"
pool = "echo"
scheduler = "{{sched}}"

[pools.echo]
{{servers}}
"""


def _servers(names, weights=None) -> str:
    out = []
    for n in names:
        i = int(n[2:])
        w = (weights or {}).get(n, 1)
        out.append(f'[[pools.echo.servers]]\nname = "{n}"\naddress = "198.18.0.1{i}:9000"\nweight = {w}\n')
    return "\n".join(out)


def test_pool_changes_break_no_established_connection(lab_up, tmp_path):
    lab = _nat_lab(lab_up)
    for rs in ("rs1", "rs2", "rs3"):
        lab.node(rs).serve_http(80, echo_ports=[9000])
    cfg = ECHO.format(sched="rr", servers=_servers(["rs1", "rs2", "rs3"]))
    d = Director(lab, tmp_path, cfg)
    client = lab.node("client")
    director = lab.node("director")
    try:
        run = client.connections(VIP, 9000, count=12, duration=3.0, interval=0.02, background=True)
        changes = [
            ECHO.format(sched="wrr", servers=_servers(["rs1", "rs2", "rs3"], {"rs1": 3})),
            ECHO.format(sched="wrr", servers=_servers(["rs1", "rs2"])),           # rs3 removed
            ECHO.format(sched="mh", servers=_servers(["rs1", "rs3"], {"rs3": 2})),  # rs2 removed, rs3 back
        ]
        for cfg_text in changes:
            time.sleep(0.6)
            before = director.run(["nft", "list", "table", "ip", "herder"]).stdout
            d.reload(cfg_text)
            wait_for(lambda before=before: director.run(["nft", "list", "table", "ip", "herder"]).stdout != before,
                     5, "the reload to reach the kernel")
        report = run.wait()
        assert report.unbroken, report.breaks[:5]
        per_conn = Counter(len(c.servers) for c in report.connections)
        assert per_conn == {1: 12}, "a connection changed server"
        assert {c.servers[0] for c in report.connections} == {"rs1", "rs2", "rs3"}
        assert all(c.answered == c.sent for c in report.connections)
    except AssertionError:
        print(d.log())
        raise
    finally:
        d.stop()


def test_a_reload_adds_a_virtual_service_and_changes_a_scheduler_live(lab_up, tmp_path):
    """SIGHUP: a new service on the VIP answers, and the scheduler of the running one
    changes, without a restart (the VIP and the tables stay)."""
    lab = _nat_lab(lab_up)
    for rs in ("rs1", "rs2", "rs3"):
        lab.node(rs).serve_http(80, echo_ports=[9000])
    servers = _servers(["rs1", "rs2"])
    d = Director(lab, tmp_path, ECHO.format(sched="rr", servers=servers))
    client = lab.node("client")
    director = lab.node("director")
    try:
        assert not client.requests(f"http://{VIP}/", count=1, timeout=1).counts  # no service on :80 yet
        before = director.run(["nft", "list", "table", "ip", "herder"]).stdout
        assert "jhash" not in before  # rr: a counter, no hash
        web = (f'\n[services.web]\nmode = "tcp"\nlisten = "{VIP}:80"\npool = "web"\n\n[pools.web]\n'
               '[[pools.web.servers]]\nname = "rs3"\naddress = "198.18.0.13:80"\n')
        d.reload(ECHO.format(sched="sh", servers=servers) + web)
        wait_for(lambda: "after the reload" in d.log(), 5, "the reload")
        wait_for(lambda: bool(client.requests(f"http://{VIP}/", count=1, timeout=1).counts), 5,
                 "the new service to answer")
        got = client.requests(f"http://{VIP}/", count=5, timeout=2)
        assert not got.errors and got.counts == {"rs3": 5}, got.counts
        assert "jhash" in director.run(["nft", "list", "table", "ip", "herder"]).stdout  # sh: source hashing
        assert "a restart is needed" not in d.log()
    except AssertionError:
        print(d.log())
        raise
    finally:
        d.stop()
