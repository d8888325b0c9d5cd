"""``herder ipvsadm`` on a lab director: the lecture's three lines, ipvsadm's layout, -S/-R,
and herder keeping to its own nftables tables."""

from __future__ import annotations

import re

import pytest
from l4_lab import VIP, herder

pytestmark = pytest.mark.netns

LECTURE = [
    f"-A -t {VIP}:80 -s rr",
    f"-a -t {VIP}:80 -r 198.18.0.11:80 -m",
    f"-a -t {VIP}:80 -r 198.18.0.12:80 -m",
]

DEST = re.compile(r"^  -> (\S+)\s+(Masq|Route)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")


def test_lecture_commands_list_save_restore(lab_up):
    lab = lab_up("flat")
    director, client = lab.node("director"), lab.node("client")
    director.run(["ip", "addr", "add", f"{VIP}/32", "dev", "eth0"])
    for rs in ("rs1", "rs2"):
        lab.node(rs).run(["ip", "route", "add", "198.18.0.10/32", "via", "198.18.0.2"])
    # somebody else's table in the same namespace: herder must leave it alone
    director.run(["nft", "add table inet other; add chain inet other c; add rule inet other c counter"])
    for line in LECTURE:
        herder(director, "ipvsadm", *line.split())
    report = client.requests(f"http://{VIP}/", count=10, timeout=2)
    assert report.counts == {"rs1": 5, "rs2": 5}, report.counts

    out = herder(director, "ipvsadm", "-L", "-n").stdout.splitlines()
    assert out[:3] == ["IP Virtual Server version 1.2.1 (size=4096)",
                       "Prot LocalAddress:Port Scheduler Flags",
                       "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]
    assert out[3] == f"TCP  {VIP}:80 rr"
    rows = [DEST.match(x) for x in out[4:]]
    assert [m.group(1, 2, 3) for m in rows] == [("198.18.0.11:80", "Masq", "1"), ("198.18.0.12:80", "Masq", "1")]
    assert sum(int(m.group(4)) + int(m.group(5)) for m in rows) == 10  # conntrack entries per destination
    stats = herder(director, "ipvsadm", "-L", "-n", "--stats").stdout.splitlines()
    assert re.match(rf"TCP  {re.escape(VIP)}:80\s+10\s+\d+\s+\d+", stats[3]), stats
    conns = herder(director, "ipvsadm", "-Lnc").stdout.splitlines()
    assert conns[0] == "IPVS connection entries" and len(conns) == 12

    saved = herder(director, "ipvsadm", "-S", "-n").stdout
    assert saved.splitlines() == [f"-A -t {VIP}:80 -s rr", f"-a -t {VIP}:80 -r 198.18.0.11:80 -m -w 1",
                                  f"-a -t {VIP}:80 -r 198.18.0.12:80 -m -w 1"]
    listing = herder(director, "ipvsadm", "-L", "-n").stdout
    herder(director, "ipvsadm", "-C")
    assert "herder" not in director.run(["nft", "list", "tables"]).stdout
    assert herder(director, "ipvsadm", "-L", "-n").stdout.count("\n") == 3
    herder(director, "ipvsadm", "-R", input=saved)
    assert herder(director, "ipvsadm", "-S", "-n").stdout == saved
    again = herder(director, "ipvsadm", "-L", "-n").stdout
    assert [DEST.match(x).group(1, 2, 3) if DEST.match(x) else x for x in again.splitlines()] == \
           [DEST.match(x).group(1, 2, 3) if DEST.match(x) else x for x in listing.splitlines()]
    assert client.requests(f"http://{VIP}/", count=4, timeout=2).counts == {"rs1": 2, "rs2": 2}

    # bad input changes nothing
    res = herder(director, "ipvsadm", "-a", "-t", f"{VIP}:80", "-r", "198.18.0.13:80", "-m", "-w", "x",
                 check=False)
    assert res.returncode != 0 and "illegal weight" in res.stderr
    assert herder(director, "ipvsadm", "-S", "-n").stdout == saved
    tables = director.run(["nft", "list", "tables"]).stdout.split("\n")
    assert "table inet other" in tables
    assert "counter" in director.run(["nft", "list", "table", "inet", "other"]).stdout
    herder(director, "ipvsadm", "-C")
