"""The [vrrp] section and the keepalived.conf importer: what they accept, and errors that
name file, line and key."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from herder.config import ConfigErrors
from herder.config.load import detect, load_strings
from herder.ha.keepalived_conf import parse_blocks, tokenize_line
from herder.ha.vrrp.machine import GarpPolicy
from herder.ha.vrrp.settings import TrackRef, VrrpSettings, parse_vip

pytestmark = pytest.mark.unit

LECTURE = """
vrrp_script chk_haproxy {
    script "killall -0 haproxy"
    interval 2
    weight 2
}

vrrp_instance VI_1 {
    interface eth0
    state MASTER
    virtual_router_id 51
    priority 101
    virtual_ipaddress {
        192.168.1.1
    }
    track_script {
        chk_haproxy
    }
}
"""


def vrrp(files: list[tuple[str, str]]) -> VrrpSettings:
    sec = load_strings(files).sections["vrrp"]
    assert isinstance(sec, VrrpSettings)
    return sec


def errors(files: list[tuple[str, str]]) -> list[str]:
    with pytest.raises(ConfigErrors) as ei:
        load_strings(files)
    return [str(e) for e in ei.value.errors]


def test_the_lecture_config_loads_as_written():
    s = vrrp([("keepalived.conf", LECTURE)])
    vi = s.instances["VI_1"]
    assert (vi.interface, vi.vrid, vi.priority, vi.state, vi.version, vi.advert_int_s) == ("eth0", 51, 101, "MASTER",
                                                                                            2, 1.0)
    assert [str(v.interface) for v in vi.vips] == ["192.168.1.1/32"]
    assert vi.track_scripts == (TrackRef("chk_haproxy"),)
    chk = s.scripts["chk_haproxy"]
    assert (chk.script, chk.interval_s, chk.weight, chk.rise, chk.fall) == ("killall -0 haproxy", 2.0, 2, 1, 1)
    assert vi.preempt and vi.garp == GarpPolicy()  # keepalived's defaults: 5 GARPs, again after 5 s


def test_detection_by_name_and_by_syntax():
    assert detect("/etc/keepalived/keepalived.conf", "").name == "keepalived"
    assert detect("lb1.conf", "! Configuration\nglobal_defs {\n}\n").name == "keepalived"
    assert detect("lb1.conf", "# comment\n\nvrrp_instance X {\n}\n").name == "keepalived"
    assert detect("haproxy.cfg", "global\n").name == "haproxy"


FULL = """
! keepalived.conf with most of what herder reads
global_defs {
   notification_email { ops@example.org }
   router_id LB1
   vrrp_version 3
   vrrp_garp_master_delay 2
   vrrp_garp_master_repeat 3
   vrrp_garp_master_refresh 60
   vrrp_lower_prio_no_advert
}
vrrp_script chk {
    script "/usr/local/bin/check --quick"
    interval 1
    timeout 3
    weight -20 reverse
    rise 2
    fall 3
    init_fail
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 0.1
    nopreempt
    preempt_delay 5
    use_vmac
    virtual_ipaddress {
        198.18.0.100/24 dev eth0 label eth0:vip
        198.18.0.101
    }
    track_script {
        chk weight -30
    }
    track_interface {
        eth1
        eth2 weight 10 reverse
    }
    notify_master "/bin/echo master"
    notify /usr/local/bin/notify.sh
}
vrrp_instance VI_2 {
    interface eth1
    virtual_router_id 52
    priority 90
    unicast_src_ip 198.18.1.2
    unicast_peer {
        198.18.1.3
        198.18.1.4
    }
    virtual_ipaddress { 198.18.1.100 }
    garp_master_repeat 1
}
vrrp_instance V6 {
    interface eth0
    virtual_router_id 60
    virtual_ipaddress {
        2001:2::100/64
    }
}
vrrp_sync_group G1 {
    group {
        VI_1
        VI_2
    }
    notify_fault "/bin/echo group fault"
}
"""


def test_full_keepalived_conf():
    s = vrrp([("keepalived.conf", FULL)])
    assert s.router_id == "LB1"
    v1 = s.instances["VI_1"]
    assert (v1.version, v1.advert_int_s, v1.preempt, v1.preempt_delay_s, v1.use_vmac) == (3, 0.1, False, 5.0,
                                                                                          "vrrp.51")
    assert [str(v) for v in v1.vips] == ["198.18.0.100/24 dev eth0 label eth0:vip", "198.18.0.101/32"]
    assert v1.track_scripts == (TrackRef("chk", -30, False),)
    assert v1.track_interfaces == (TrackRef("eth1", 0), TrackRef("eth2", 10, True))
    assert v1.garp.master_delay_s == 2 and v1.garp.master_repeat == 3 and v1.garp.master_refresh_s == 60
    assert v1.garp.lower_prio_delay_s == 2 and v1.garp.lower_prio_repeat == 3  # default to the master ones
    assert v1.lower_prio_no_advert and v1.notify_master == "/bin/echo master"
    assert v1.notify == "/usr/local/bin/notify.sh"
    v2 = s.instances["VI_2"]
    assert v2.unicast_src_ip == ip_address("198.18.1.2")
    assert v2.unicast_peers == (ip_address("198.18.1.3"), ip_address("198.18.1.4"))
    assert v2.garp.master_repeat == 1
    v6 = s.instances["V6"]
    assert (v6.family, v6.version) == (6, 3)
    chk = s.scripts["chk"]
    assert (chk.timeout_s, chk.weight, chk.reverse, chk.rise, chk.fall, chk.init_fail) == (3.0, -20, True, 2, 3,
                                                                                            True)
    assert s.sync_groups["G1"].members == ("VI_1", "VI_2")
    assert s.sync_groups["G1"].notify_fault == "/bin/echo group fault"


# (description, keepalived.conf, expected error strings)
BAD = [
    ("unsupported instance keyword", "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n"
     " virtual_ipaddress { 10.0.0.1 }\n  smtp_alert\n  track_file { f }\n}\n",
     ["keepalived.conf:6: track_file: unsupported vrrp_instance keyword"]),
    ("unsupported global keyword", "global_defs {\n  vrrp_strict\n}\n",
     ["keepalived.conf:2: vrrp_strict: unsupported global_defs keyword"]),
    ("authentication", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress { 10.0.0.1 }\n"
     " authentication {\n  auth_type PASS\n  auth_pass 1234\n }\n}\n",
     ["keepalived.conf:5: authentication: VRRP authentication is not supported"]),
    ("bad number", "vrrp_instance V {\n interface eth0\n virtual_router_id one\n virtual_ipaddress { 10.0.0.1 }\n}\n",
     ["keepalived.conf:3: virtual_router_id: expected an integer, got 'one'"]),
    ("range checked by the shared schema", "vrrp_instance V {\n interface eth0\n virtual_router_id 300\n"
     " virtual_ipaddress { 10.0.0.1 }\n}\n",
     ["keepalived.conf:3: vrrp_instance V: virtual_router_id: expected an integer 1..255, got integer 300 "
      "(out of range)"]),
    ("unknown track script", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n"
     " virtual_ipaddress { 10.0.0.1 }\n track_script {\n   nope\n }\n}\n",
     ["keepalived.conf:6: vrrp_instance V: track_script[0]: no vrrp script named 'nope'"]),
    ("missing VIPs", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n}\n",
     ["keepalived.conf:1: vrrp_instance V: missing required key 'virtual_ipaddress'"]),
    ("v2 sub-second", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n advert_int 0.5\n"
     " virtual_ipaddress { 10.0.0.1 }\n}\n",
     ["keepalived.conf:4: vrrp_instance V: advert_int: VRRPv2 advertises whole seconds; 0.5 is not"]),
    ("unclosed block", "vrrp_instance V {\n interface eth0\n", ["keepalived.conf:1: vrrp_instance: block is not "
                                                                "closed (missing '}')"]),
    ("stray brace", "}\n", ["keepalived.conf:1: }: closing brace without an opening one"]),
    ("duplicate instance", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress { 10.0.0.1 }\n"
     "}\nvrrp_instance V {\n}\n", ["keepalived.conf:6: vrrp_instance: duplicate vrrp_instance V (first at line 1)"]),
    ("include", "include /etc/keepalived/other.conf\n", ["keepalived.conf:1: include: unsupported keepalived "
                                                          "keyword"]),
    ("bad vip option", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n"
     "  10.0.0.1 scope link\n }\n}\n", ["keepalived.conf:5: vrrp_instance V: virtual_ipaddress[0]: expected a "
                                        "virtual address"]),
    ("sync group of nothing", "vrrp_sync_group G {\n group {\n  VX\n }\n}\n",
     ["keepalived.conf:3: vrrp_sync_group G: group[0]: no vrrp instance named 'VX'"]),
    ("mixed families", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n"
     "  10.0.0.1\n  2001:2::1\n }\n}\n", ["keepalived.conf:4: vrrp_instance V: virtual_ipaddress: all virtual "
                                          "addresses of an instance must be one family"]),
    ("notify as another user", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n"
     " virtual_ipaddress { 10.0.0.1 }\n notify_master /bin/true root\n}\n",
     ["keepalived.conf:5: notify_master: running notify scripts as another user is not supported"]),
    ("vmac with a MAC", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n"
     " virtual_ipaddress { 10.0.0.1 }\n use_vmac vrrp.1 02:00:00:00:00:01\n}\n",
     ["keepalived.conf:5: use_vmac: use_vmac with a MAC address is not supported"]),
]


@pytest.mark.parametrize("desc, text, want", BAD, ids=[b[0] for b in BAD])
def test_importer_errors_name_their_line(desc, text, want):
    got = errors([("keepalived.conf", text)])
    for w in want:
        assert any(g.startswith(w) for g in got), got


def test_virtual_server_blocks_go_to_the_layer_that_registered_for_them(monkeypatch):
    from herder.ha import keepalived_conf as k

    text = "virtual_server 10.0.0.1 80 {\n  lb_algo rr\n  real_server 10.0.0.2 80 {\n  }\n}\n"
    monkeypatch.setattr(k, "_block_handlers", {})
    got = errors([("keepalived.conf", text)])
    assert got[0].startswith("keepalived.conf:1: virtual_server: virtual_server blocks (IPVS virtual servers) are "
                             "not supported yet"), got
    seen = []
    k.register_block_handler("virtual_server", lambda st, loader: seen.append((st.line, st.args, len(st.block))))
    load_strings([("keepalived.conf", text)])
    assert seen == [(1, ["10.0.0.1", "80"], 2)]


def test_every_error_of_a_file_is_reported_at_once():
    text = "global_defs {\n  bogus 1\n}\nvrrp_instance V {\n  interface eth0\n  priority abc\n  frobnicate\n}\n"
    got = errors([("keepalived.conf", text)])
    assert [g.split(":")[1] for g in got[:3]] == ["2", "6", "7"]


def test_tokenizer_and_blocks():
    assert tokenize_line('  script "killall -0 haproxy"  # comment') == ["script", "killall -0 haproxy"]
    assert tokenize_line("virtual_ipaddress { 10.0.0.1 }") == ["virtual_ipaddress", "{", "10.0.0.1", "}"]
    assert tokenize_line("! a keepalived comment") == []
    errs: list = []
    tree = parse_blocks("vrrp_instance V\n{\n  priority 5\n}\n", errs)
    assert not errs and tree[0].words == ["vrrp_instance", "V"] and tree[0].block[0].words == ["priority", "5"]
    with pytest.raises(ValueError):
        tokenize_line('script "unterminated')


NATIVE = """
[vrrp]
version = 3
garp_master_delay = 0

[vrrp.scripts.chk]
script = "test -e /run/ok"
interval = "200ms"
weight = -10

[vrrp.instances.VI_1]
interface = "eth0"
virtual_router_id = 51
priority = 150
advert_int = 0.1
virtual_ipaddress = "198.18.0.100/24"
track_script = [{ name = "chk", weight = -60 }]
track_service = [{ service = "www", min_up = 2 }, { pool = "web", weight = 5 }]
use_vmac = "vmac51"
"""


def test_native_toml():
    s = vrrp([("herder.toml", NATIVE)])
    vi = s.instances["VI_1"]
    assert vi.version == 3 and vi.garp.master_delay_s == 0 and vi.use_vmac == "vmac51"
    assert s.scripts["chk"].interval_s == pytest.approx(0.2)
    assert vi.track_scripts == (TrackRef("chk", -60, False),)
    assert [t.label for t in vi.track_services] == ["service www", "pool web"]


@pytest.mark.parametrize("snippet, want", [
    ('virtual_router_id = 51\nvirtual_ipaddress = ["198.18.0.100"]\nprority = 5',
     "herder.toml:7: vrrp.instances.V.prority: unknown key 'prority'; did you mean 'priority'?"),
    ('virtual_router_id = 51\nvirtual_ipaddress = ["2001:2::1"]\nversion = 2',
     "herder.toml:7: vrrp.instances.V.version: VRRPv2 (RFC 3768) is IPv4 only"),
    ('virtual_router_id = 51\nvirtual_ipaddress = ["2001:2::1"]\nuse_vmac = true',
     "herder.toml:7: vrrp.instances.V.use_vmac: use_vmac is supported for IPv4 instances only"),
    ('virtual_router_id = 51\nvirtual_ipaddress = ["198.18.0.1"]\ntrack_service = [{ pool = "a", service = "b" }]',
     "herder.toml:7: vrrp.instances.V.track_service[0]: give exactly one of `service` or `pool`"),
    ('virtual_router_id = 51\nvirtual_ipaddress = ["198.18.0.1"]\nunicast_peer = ["2001:2::3"]',
     "herder.toml:7: vrrp.instances.V.unicast_peer[0]: unicast peer 2001:2::3 is not IPv4"),
])
def test_native_errors_name_file_line_key(snippet, want):
    text = f'\n[vrrp.instances.V]\ninterface = "eth0"\n\n{snippet}\n'
    got = errors([("herder.toml", text)])
    assert any(g.startswith(want) for g in got), got


def test_duplicate_vrid_on_one_interface():
    text = "".join(f'[vrrp.instances.{n}]\ninterface = "eth0"\nvirtual_router_id = 7\nvirtual_ipaddress = '
                   f'["198.18.0.{i}"]\n' for i, n in enumerate(("A", "B"), 1))
    got = errors([("herder.toml", text)])
    assert any("VRID 7 is already used on eth0 (IPv4) by instance 'A'" in g for g in got), got


def test_parse_vip():
    assert str(parse_vip("198.18.0.1")) == "198.18.0.1/32"
    assert str(parse_vip("2001:2::1")) == "2001:2::1/128"
    with pytest.raises(ValueError, match="brd"):
        parse_vip("198.18.0.1/24 brd 198.18.0.255")
