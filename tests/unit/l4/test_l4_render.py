"""Rendering and diffing nftables rulesets, applied through the recording backend."""

from __future__ import annotations

import re

import pytest

from herder.l4.apply_nft import Applier, ApplyError, RecordingBackend
from herder.l4.plan import plan
from herder.l4.render_nft import diff, full_text, render
from herder.l4.ruleset import DEFAULT_SEED, Forward, Scheduler, VirtualServiceSpec
from herder.pool import Endpoint, Health, HealthState, Pool, PoolState, Server

pytestmark = pytest.mark.unit

VIP = "198.18.0.100"


def state(n: int = 3) -> PoolState:
    ps = PoolState()
    ps.load([Pool("p", tuple(Server(f"rs{i}", Endpoint(f"198.18.0.{10 + i}", 80)) for i in range(1, n + 1)))])
    return ps


def elements(cmds: list[str], verb: str, mapname: str) -> int:
    n = 0
    for c in cmds:
        m = re.match(rf"{verb} element \S+ \S+ {mapname} {{ (.*) }}$", c)
        if m:
            n += len(m.group(1).split(", "))
    return n


def test_full_text_replaces_both_tables_in_one_file():
    ps = state()
    rs = plan(ps.snapshot, [VirtualServiceSpec("s", "tcp", VIP, 80, "p", scheduler=Scheduler.RR)])
    text = full_text(render(rs))
    lines = text.splitlines()
    assert lines[:2] == ["add table ip herder", "delete table ip herder"]
    assert "add table netdev herder_dsr" not in lines  # no DR service, no DR table
    assert "add chain ip herder prerouting { type nat hook prerouting priority dstnat; policy accept; }" in lines
    assert "add rule ip herder s_tcp_198_18_0_100_80 ct mark set numgen inc mod 3 map @t_tcp_198_18_0_100_80" in lines
    assert any("dnat ip to ct mark map @dnat_to" in x for x in lines)


def test_first_apply_cleans_both_owned_tables():
    ps = state()
    rs = plan(ps.snapshot, [VirtualServiceSpec("s", "tcp", VIP, 80, "p")])
    cmds = diff(None, render(rs), owned=("ip herder", "netdev herder_dsr"))
    assert cmds[:4] == ["add table ip herder", "delete table ip herder",
                        "add table netdev herder_dsr", "delete table netdev herder_dsr"]


def test_hash_schedulers_use_the_explicit_seed():
    ps = state()
    specs = [VirtualServiceSpec("a", "tcp", VIP, 80, "p", scheduler=Scheduler.SH),
             VirtualServiceSpec("b", "tcp", VIP, 81, "p", scheduler=Scheduler.MH, hash_key="flow"),
             VirtualServiceSpec("c", "udp", VIP, 53, "p", scheduler=Scheduler.DH)]
    text = full_text(render(plan(ps.snapshot, specs)))
    seed = f"seed 0x{DEFAULT_SEED:08x}"
    assert f"jhash ip saddr mod 256 {seed}" in text
    assert f"jhash ip saddr . tcp sport mod 65537 {seed}" in text
    assert f"jhash ip daddr mod 256 {seed}" in text
    assert "jhash" not in text.replace(seed, "").split("seed")[0] or text.count("jhash") == text.count(seed)


def test_weight_change_touches_only_table_elements():
    ps = state()
    spec = VirtualServiceSpec("s", "tcp", VIP, 80, "p", scheduler=Scheduler.MH)
    a = plan(ps.snapshot, [spec])
    ps.set_weight("p", "rs2", 0)
    b = plan(ps.snapshot, [spec], previous=a)
    cmds = diff(render(a), render(b))
    assert all(c.startswith(("delete element", "add element")) for c in cmds), cmds[:5]
    changed = sum(1 for x, y in zip(a.services[0].table, b.services[0].table, strict=True) if x != y)
    assert elements(cmds, "delete", "t_tcp_198_18_0_100_80") == changed
    assert elements(cmds, "add", "t_tcp_198_18_0_100_80") == changed
    # rs2 is quiesced: still a destination, still alive (its flows continue)
    assert not any("dnat_to" in c for c in cmds)


def test_maglev_change_rewrites_only_changed_slots():
    ps = state(20)
    spec = VirtualServiceSpec("s", "tcp", VIP, 80, "p", scheduler=Scheduler.MH)
    a = plan(ps.snapshot, [spec])
    ps.set_health("p", "rs7", Health(HealthState.DOWN))
    b = plan(ps.snapshot, [spec], previous=a)
    cmds = diff(render(a), render(b))
    changed = sum(1 for x, y in zip(a.services[0].table, b.services[0].table, strict=True) if x != y)
    assert changed < 65537 // 10
    assert elements(cmds, "add", "t_tcp_198_18_0_100_80") == changed
    # the removed destination leaves dnat_to, its counters go last
    assert any(c.startswith("delete element ip herder dnat_to") for c in cmds)
    assert cmds[-1].startswith("delete counter")


def test_rr_server_added_rewrites_the_chain():
    ps = state(2)
    spec = VirtualServiceSpec("s", "tcp", VIP, 80, "p", scheduler=Scheduler.RR)
    a = plan(ps.snapshot, [spec])
    ps.load([Pool("p", tuple(Server(f"rs{i}", Endpoint(f"198.18.0.{10 + i}", 80)) for i in range(1, 4)))])
    b = plan(ps.snapshot, [spec], previous=a)
    cmds = diff(render(a), render(b))
    assert "flush chain ip herder s_tcp_198_18_0_100_80" in cmds
    assert any("numgen inc mod 3" in c for c in cmds)
    assert cmds.index("flush chain ip herder s_tcp_198_18_0_100_80") > max(
        i for i, c in enumerate(cmds) if c.startswith("add counter"))


def test_service_removed_and_added():
    ps = state()
    s80 = VirtualServiceSpec("a", "tcp", VIP, 80, "p")
    s81 = VirtualServiceSpec("b", "tcp", VIP, 81, "p", persistence_s=300, netmask="255.255.255.0")
    a = plan(ps.snapshot, [s80])
    b = plan(ps.snapshot, [s81], previous=a)
    cmds = diff(render(a), render(b))
    add_chain = cmds.index("add chain ip herder s_tcp_198_18_0_100_81")
    jump = next(i for i, c in enumerate(cmds) if "jump s_tcp_198_18_0_100_81" in c)
    assert add_chain < jump
    assert "delete chain ip herder s_tcp_198_18_0_100_80" in cmds
    assert cmds.index("delete chain ip herder s_tcp_198_18_0_100_80") > jump
    assert "add map ip herder p_tcp_198_18_0_100_81_300 { typeof ip saddr : ct mark; size 65536; " \
           "flags dynamic,timeout; timeout 300s; }" in cmds
    assert any("ct mark set ip saddr & 255.255.255.0 map @p_tcp_198_18_0_100_81_300" in c for c in cmds)


def test_dr_table_uses_flow_map_and_fwd():
    ps = state()
    spec = VirtualServiceSpec("s", "tcp", VIP, 80, "p", forward=Forward.DR, scheduler=Scheduler.MH,
                              ingress_device="eth0")
    text = full_text(render(plan(ps.snapshot, [spec])))
    assert "add chain netdev herder_dsr in_eth0 { type filter hook ingress device \"eth0\" priority 0; " \
           "policy accept; }" in text
    assert "meta mark set ip saddr . tcp sport map @f_tcp_198_18_0_100_80_900" in text
    assert 'fwd ip to meta mark map @fwd_to device "eth0"' in text
    assert "table ip herder" not in text.replace("table ip herder_", "")  # only the DR table


def test_tunnelling_and_missing_device_are_refused():
    ps = state()
    with pytest.raises(ValueError, match="tunnelling"):
        render(plan(ps.snapshot, [VirtualServiceSpec("s", "tcp", VIP, 80, "p", forward=Forward.TUN)]))
    with pytest.raises(ValueError, match="device"):
        render(plan(ps.snapshot, [VirtualServiceSpec("s", "tcp", VIP, 80, "p", forward=Forward.DR)]))


def test_no_change_no_transaction_and_failure_keeps_previous():
    ps = state()
    spec = VirtualServiceSpec("s", "tcp", VIP, 80, "p")
    rec = RecordingBackend()
    ap = Applier(rec)
    first = plan(ps.snapshot, [spec])
    assert ap.apply(first).full
    assert not ap.apply(plan(ps.snapshot, [spec], previous=first)).changed
    assert len(rec.transactions) == 1
    ps.set_weight("p", "rs1", 3)
    second = plan(ps.snapshot, [spec], previous=first)
    rec.fail_next = "Error: Could not process rule: No buffer space available"
    with pytest.raises(ApplyError, match="previous ruleset stays in place"):
        ap.apply(second)
    assert ap.ruleset == first and ap.failures == 1
    # the next attempt diffs against what the kernel still holds
    ap.apply(second)
    assert ap.ruleset is second and rec.last and not rec.last[0].startswith("add table")
