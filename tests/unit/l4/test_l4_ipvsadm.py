"""ipvsadm: parsing, the table model, ipvsadm's output layouts, -S/-R, the rules importer."""

from __future__ import annotations

import pytest

from herder.config.errors import ConfigErrors
from herder.config.load import load_strings, load_text
from herder.l4.ipvsadm import (
    ConnEntry,
    DestStats,
    IpvsError,
    IpvsTable,
    format_connections,
    format_list,
    format_save,
    parse_args,
    parse_rules,
    table_from_ruleset,
)
from herder.l4.plan import plan
from herder.l4.ruleset import Forward
from herder.pool import PoolState

pytestmark = pytest.mark.unit

LECTURE = [
    "ipvsadm -A -t 192.168.0.1:80 -s rr",
    "ipvsadm -a -t 192.168.0.1:80 -r 172.16.0.1:80 -m",
    "ipvsadm -a -t 192.168.0.1:80 -r 172.16.0.2:80 -m",
]

# ipvsadm pads the last column too ("%-10u\n"), so the destination lines end in spaces.
PAD = " " * 9
LECTURE_LIST = "\n".join([
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    "TCP  192.168.0.1:80 rr",
    "  -> 172.16.0.1:80                Masq    1      0          0" + PAD,
    "  -> 172.16.0.2:80                Masq    1      0          0" + PAD,
]) + "\n"


def build(lines: list[str]) -> IpvsTable:
    t = IpvsTable()
    for line in lines:
        t.apply(parse_args(line.split()))
    return t


def test_the_lecture_lines_work_as_written():
    t = build(LECTURE)
    assert format_list(t) == LECTURE_LIST
    assert format_save(t) == ("-A -t 192.168.0.1:80 -s rr\n"
                              "-a -t 192.168.0.1:80 -r 172.16.0.1:80 -m -w 1\n"
                              "-a -t 192.168.0.1:80 -r 172.16.0.2:80 -m -w 1\n")


def test_listing_is_sorted_as_ipvsadm_sorts():
    t = build(["-A -u 10.0.0.1:53 -s sh", "-A -t 10.0.0.2:80 -s wrr", "-A -t 10.0.0.1:443 -s wrr",
               "-a -t 10.0.0.2:80 -r 10.9.0.20:80 -m -w 2", "-a -t 10.0.0.2:80 -r 10.9.0.3:80 -m"])
    rows = [line for line in format_list(t).splitlines() if not line.startswith(("IP ", "Prot", "  -> Remote"))]
    assert rows[0].startswith("TCP  10.0.0.1:443") and rows[1].startswith("TCP  10.0.0.2:80")
    assert rows[2].startswith("  -> 10.9.0.3:80") and rows[3].startswith("  -> 10.9.0.20:80")
    assert rows[4].startswith("UDP  10.0.0.1:53 sh")


def test_persistence_flags_and_weights_in_the_listing():
    t = build(["-A -t 10.0.0.1:80 -s mh -b mh-port -p 600 -M 255.255.255.0",
               "-a -t 10.0.0.1:80 -r 10.9.0.1 -g -w 0"])
    out = format_list(t).splitlines()
    assert out[3] == "TCP  10.0.0.1:80 mh (mh-port) persistent 600 mask 255.255.255.0"
    assert out[4] == "  -> 10.9.0.1:80                  Route   0      0          0" + PAD
    assert format_save(t).splitlines() == ["-A -t 10.0.0.1:80 -s mh -b mh-port -p 600 -M 255.255.255.0",
                                           "-a -t 10.0.0.1:80 -r 10.9.0.1:80 -g -w 0"]


def test_stats_and_rate_layouts():
    t = build(LECTURE)
    stats = {("tcp:192.168.0.1:80", "172.16.0.1", 80): DestStats(3, 18, 12, 1188, 1143),
             ("tcp:192.168.0.1:80", "172.16.0.2", 80): DestStats(123456789, 1, 2, 3, 4)}
    out = format_list(t, stats=stats, mode="stats").splitlines()
    assert out[1] == "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
    assert out[2] == "  -> RemoteAddress:Port"
    assert out[3] == "TCP  192.168.0.1:80                123456K       19       14     1191     1147"
    # ipvsadm: printf("  -> %-28s", dest) then %9llu per counter; services: printf("%-33s", svc)
    assert out[4] == "  -> 172.16.0.1:80" + " " * 15 + "        3       18       12     1188     1143"
    assert len(out[3]) == len(out[4]) == 33 + 5 * 9
    assert format_list(t, stats=stats, mode="stats", exact=True).splitlines()[3].startswith(
        "TCP  192.168.0.1:80" + " " * 15 + "123456792")  # --exact: width len+1 past 8 digits
    rate = format_list(t, mode="rate").splitlines()
    assert rate[1] == "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"


def test_connection_listing():
    out = format_connections([ConnEntry("tcp", 119, "TIME_WAIT", "198.18.0.10:40484", "198.18.0.100:80",
                                        "198.18.0.12:8000")])
    assert out.splitlines() == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination       ",
        "TCP 01:59  TIME_WAIT   198.18.0.10:40484  198.18.0.100:80    198.18.0.12:8000",
    ]


def test_save_then_restore_rebuilds_the_same_table():
    t = build(LECTURE + ["-A -u 192.168.0.1:53 -s mh -b mh-port -p 60 -M 255.255.255.0",
                         "-a -u 192.168.0.1:53 -r 172.16.0.3 -w 3 -m", "-E -t 192.168.0.1:80 -s wrr",
                         "-e -t 192.168.0.1:80 -r 172.16.0.2:80 -m -w 5"])
    saved = format_save(t)
    again = IpvsTable()
    for _, cmd in parse_rules(saved):
        again.apply(cmd)
    assert format_save(again) == saved
    assert format_list(again) == format_list(t)


def test_combined_flags_defaults_and_service_names():
    c = parse_args(["-Ln"])
    assert c.op == "L" and c.numeric
    c = parse_args(["-A", "-t", "10.0.0.1:http", "-p"])
    assert c.port == 80 and c.persistent == 300 and c.scheduler == "wrr" and c.notes
    c = parse_args(["-a", "-t", "10.0.0.1:80", "-r", "10.9.0.1"])
    assert c.forward is None and c.rport is None  # ipvsadm's default -g applies in the table
    t = build(["-A -t 10.0.0.1:80 -s rr"])
    t.apply(c)
    assert t.services[0].dests[0].forward is Forward.DR and t.services[0].dests[0].port == 80


@pytest.mark.parametrize("line, message", [
    ("-A -t 300.0.0.1:80 -s rr", "illegal virtual address"),
    ("-A -t 10.0.0.1:99999 -s rr", "illegal virtual port"),
    ("-A -t 10.0.0.1 -s rr", "port required"),
    ("-A -t 10.0.0.1:80 -s wlc", "not available in herder's kernel path"),
    ("-A -t 10.0.0.1:80 -s bogus", "unknown scheduler"),
    ("-a -t 10.0.0.1:80 -r 10.9.0.1:80 -w 70000", "illegal weight"),
    ("-a -t 10.0.0.1:80 -r 10.9.0.1:80 -w -1", "illegal weight"),
    ("-a -t 10.0.0.1:80 -r 10.9.0.1:80 -i", "tunnelling"),
    ("-A -f 1 -s rr", "firewall-mark"),
    ("-A -t 10.0.0.1:80 -s rr -b mh-port", "does not apply"),
    ("-A -t 10.0.0.1:80 -s rr -M 255.255.255.0", "persistent"),
    ("-a -t 10.0.0.1:80", "real server required"),
    ("-A -t [::1]:80 -s rr", "IPv6"),
    ("-Q", "unknown option"),
])
def test_bad_input_is_a_clear_error(line, message):
    with pytest.raises(IpvsError, match=message):
        parse_args(line.split())


def test_table_errors_as_ipvsadm_says_them():
    t = build(LECTURE)
    with pytest.raises(IpvsError, match="Service already exists"):
        t.apply(parse_args("-A -t 192.168.0.1:80 -s rr".split()))
    with pytest.raises(IpvsError, match="Destination already exists"):
        t.apply(parse_args("-a -t 192.168.0.1:80 -r 172.16.0.1:80 -m".split()))
    with pytest.raises(IpvsError, match="No such service"):
        t.apply(parse_args("-a -t 192.168.0.9:80 -r 172.16.0.1:80 -m".split()))
    with pytest.raises(IpvsError, match="No such destination"):
        t.apply(parse_args("-d -t 192.168.0.1:80 -r 172.16.0.9:80".split()))
    t.apply(parse_args("-d -t 192.168.0.1:80 -r 172.16.0.1:80".split()))
    t.apply(parse_args("-D -t 192.168.0.1:80".split()))
    assert t.services == []


def test_rules_file_errors_name_the_line():
    with pytest.raises(IpvsError, match="line 2: .*illegal weight"):
        parse_rules("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.9.0.1 -w x\n")
    with pytest.raises(IpvsError, match="line 1: -L cannot be restored"):
        parse_rules("-L -n\n")


def test_mixed_forwarding_in_one_service_is_refused():
    t = build(["-A -t 10.0.0.1:80 -s rr", "-a -t 10.0.0.1:80 -r 10.9.0.1 -m", "-a -t 10.0.0.1:80 -r 10.9.0.2 -g"])
    with pytest.raises(IpvsError, match="different forwarding methods"):
        t.pools_and_specs()


def test_table_plans_and_lists_back():
    t = build(LECTURE + ["-a -t 192.168.0.1:80 -r 172.16.0.3:80 -m -w 0"])
    pools, specs = t.pools_and_specs()
    ps = PoolState()
    ps.load(pools)
    rs = plan(ps.snapshot, specs)
    assert format_list(table_from_ruleset(rs)) == format_list(t)


def test_importer_reads_save_output(tmp_path):
    text = "-A -t 198.18.0.100:80 -s wrr -p 300\n-a -t 198.18.0.100:80 -r 198.18.0.11:80 -m -w 1\n" \
           "-a -t 198.18.0.100:80 -r 198.18.0.12:8000 -m -w 2\n"
    cfg = load_strings([("rules.ipvsadm", text)])
    svc = cfg.services["tcp-198.18.0.100-80"]
    assert svc.mode == "tcp" and str(svc.listen[0]) == "198.18.0.100:80"
    assert svc.settings["scheduler"] == "wrr" and svc.settings["persistence_timeout"] == 300.0
    pool = cfg.pools["tcp-198.18.0.100-80"]
    assert [(s.address.port, s.weight) for s in pool.servers] == [(80, 1), (8000, 2)]


def test_importer_errors_name_file_and_line():
    frag = load_text("lb.ipvsadm", "-A -t 198.18.0.100:80 -s rr\n\n-a -t 198.18.0.100:80 -r nothost -m\n")
    assert [(e.file, e.line) for e in frag.ctx.errors] == [("lb.ipvsadm", 3)]
    assert "illegal real server address" in str(frag.ctx.errors[0])
    with pytest.raises(ConfigErrors, match="lb.ipvsadm:1"):
        load_strings([("lb.ipvsadm", "-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 10.0.0.1 -m\n"
                                     "-a -t 198.18.0.100:80 -r 10.0.0.2 -g\n")])
