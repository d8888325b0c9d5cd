"""The VRRP state machine: pairs of machines over a fake LAN, a hand-advanced clock, no sleeps."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest
from vrrp_pair import Lan, masters

from herder.ha.vrrp.machine import (
    TRANSITIONS,
    GarpPolicy,
    InstanceConfig,
    LocalProtocolError,
    SendAdvert,
    SendGratuitousArp,
    SendNeighborAdvert,
    State,
    VrrpMachine,
    effective_priority,
    master_down_interval,
    skew_time,
)
from herder.ha.vrrp.packet import MCAST_V4

pytestmark = pytest.mark.unit

VIP = ip_address("198.18.0.100")
A_ADDR, B_ADDR = "198.18.0.2", "198.18.0.3"


def cfg(priority: int, *, version: int = 2, advert: float = 1.0, **kw) -> InstanceConfig:
    return InstanceConfig(name="VI_1", vrid=51, priority=priority, version=version, advert_int_s=advert,
                          vips=(VIP,), **kw)


def elected(lan: Lan, a_prio: int = 200, b_prio: int = 100, **kw):
    a = lan.add("a", A_ADDR, cfg(a_prio, **kw))
    b = lan.add("b", B_ADDR, cfg(b_prio, **kw))
    lan.run(5)
    return a, b


# --------------------------------------------------------------------------- timing helpers


@pytest.mark.parametrize("prio, adv_cs, version, skew, down", [
    (100, 100, 2, 156 / 256, 3 + 156 / 256),          # RFC 3768: (256 - p) / 256 s
    (254, 100, 2, 2 / 256, 3 + 2 / 256),
    (100, 10, 3, 0.06, 0.36),                          # RFC 5798: integer centiseconds
    (100, 100, 3, 0.60, 3.60),                         # 156 * 100 // 256 = 60 cs
    (200, 100, 3, 0.21, 3.21),
    (1, 4095, 3, 40.79, 3 * 40.95 + 40.79),
])
def test_skew_and_master_down(prio, adv_cs, version, skew, down):
    assert skew_time(prio, adv_cs, version) == pytest.approx(skew)
    assert master_down_interval(prio, adv_cs, version) == pytest.approx(down)


@pytest.mark.parametrize("base, adjust, want", [(100, 2, 102), (100, -200, 1), (250, 10, 254), (255, -50, 255)])
def test_effective_priority_bounds(base, adjust, want):
    assert effective_priority(base, adjust) == want


def test_transition_table_is_closed():
    targets = {s for row in TRANSITIONS.values() for s in row.values()}
    assert targets <= set(TRANSITIONS)


# --------------------------------------------------------------------------- election


def test_higher_priority_is_elected_and_holds_the_vip():
    lan = Lan()
    a, b = elected(lan)
    assert masters(lan) == ["a"]
    assert a.vips == {VIP} and not b.vips
    # a became master when its own master-down timer ran out: 3 + (256 - 200) / 256 s
    assert a.notifies[-1][0] == pytest.approx(3 + 56 / 256)
    assert b.machine.master == ip_address(A_ADDR) and b.machine.master_priority == 200
    assert a.transitions() == [("INIT", "BACKUP"), ("BACKUP", "MASTER")]
    assert b.transitions() == [("INIT", "BACKUP")]
    # the new master announced itself: an advert first, then 5 gratuitous ARPs
    garp = a.garps[0][1]
    assert isinstance(garp, SendGratuitousArp) and garp.count == 5 and garp.addresses == (VIP,)
    assert all(v is None for v in b.verdicts)


def test_equal_priority_the_higher_address_wins():
    lan = Lan()
    a, b = elected(lan, 100, 100)
    assert masters(lan) == ["b"]  # 198.18.0.3 > 198.18.0.2 (RFC 5798 6.4.3)


def test_master_adverts_every_interval_and_garp_second_set():
    lan = Lan()
    a, _ = elected(lan, version=3, advert=0.1)
    t0 = a.notifies[-1][0]
    lan.run(10)
    times = [t for t, adv in a.sent if adv.priority == 200 and t >= t0]
    gaps = {round(t2 - t1, 6) for t1, t2 in zip(times, times[1:], strict=False)}
    assert gaps == {0.1}
    # keepalived defaults: 5 GARPs at once, 5 more garp_master_delay (5 s) later, no refresh
    assert [(round(t - t0, 6), g.count) for t, g in a.garps] == [(0, 5), (5.0, 5)]


def test_owner_starting_as_master_takes_over_at_once():
    lan = Lan()
    b = lan.add("b", B_ADDR, cfg(100))
    lan.run(5)
    o = lan.add("o", A_ADDR, cfg(255, start_master=True))
    assert o.state is State.MASTER and o.notifies[-1][0] == pytest.approx(5)
    assert b.state is State.BACKUP


# --------------------------------------------------------------------------- failover


@pytest.mark.parametrize("version, advert", [(2, 1.0), (3, 0.1), (3, 1.0)])
def test_master_down_backup_takes_over_after_master_down_interval(version, advert):
    lan = Lan()
    a, b = elected(lan, version=version, advert=advert)
    last = a.sent[-1][0]
    lan.crash(a)
    took = lan.run_until(lambda: b.state is State.MASTER, 10)
    assert took <= master_down_interval(100, round(advert * 100), version)
    assert lan.now - last == pytest.approx(master_down_interval(100, round(advert * 100), version))
    assert b.vips == {VIP}
    assert b.notifies[-1][1].cause.startswith("master down: no advert from 198.18.0.2")


def test_priority_zero_handover_takes_skew_time_only():
    lan = Lan()
    a, b = elected(lan)
    t = lan.now
    a.machine.shutdown(lan.now)
    lan.pump()
    assert a.sent[-1][1].priority == 0 and a.state is State.INITIALIZE and not a.vips
    assert a.notifies[-1][1].new is State.INITIALIZE and a.notifies[-1][1].cause == "shutdown"
    lan.run_until(lambda: b.state is State.MASTER, 5)
    assert lan.now - t == pytest.approx(skew_time(100, 100, 2))  # 0.609 s, not 3.6 s
    assert b.machine.stats.priority_zero_received == 1
    assert "released (priority 0" in b.notifies[-1][1].cause


def test_preemption_old_master_takes_the_vip_back():
    lan = Lan()
    a, b = elected(lan)
    lan.crash(a)
    lan.run(5)
    assert masters(lan) == ["b"]
    lan.replace(a)  # a comes back, priority 200 > 100
    took = lan.run_until(lambda: a.state is State.MASTER, 10)
    assert took == pytest.approx(master_down_interval(200, 100, 2))  # it discards b's adverts and preempts
    assert b.state is State.BACKUP and not b.vips and a.vips == {VIP}
    assert "preempting lower-priority master 198.18.0.3" in a.notifies[-1][1].cause
    assert "higher priority advert from 198.18.0.2 (200 > 100)" in b.notifies[-1][1].cause


def test_nopreempt_the_returning_router_stays_backup():
    lan = Lan()
    a, b = elected(lan, preempt=False)
    lan.crash(a)
    lan.run(5)
    lan.replace(a)
    lan.run(20)
    assert masters(lan) == ["b"] and a.state is State.BACKUP and not a.vips


def test_preempt_delay_holds_back_preemption():
    lan = Lan()
    a, b = elected(lan, preempt_delay_s=10.0)
    lan.crash(a)
    lan.run(5)
    lan.replace(a)
    took = lan.run_until(lambda: a.state is State.MASTER, 30)
    # lower-priority adverts are accepted for 10 s after the first one, then discarded
    assert 10 < took < 10 + 1 + master_down_interval(200, 100, 2) + 0.01


def test_v3_backup_learns_the_master_interval():
    lan = Lan()
    a = lan.add("a", A_ADDR, cfg(200, version=3, advert=0.1))
    b = lan.add("b", B_ADDR, cfg(100, version=3, advert=1.0))
    lan.run(5)
    assert b.machine.master_adver_int_cs == 10
    lan.crash(a)
    took = lan.run_until(lambda: b.state is State.MASTER, 5)
    assert took < 0.5  # 3 x 0.1 s + skew, not 3 x 1 s


def test_dual_master_heals_and_the_winner_sends_fresh_garps():
    lan = Lan()
    a, b = elected(lan)
    lan.partition(a, b)
    lan.run(5)
    assert sorted(masters(lan)) == ["a", "b"]  # split brain
    n_garps = len(a.garps)
    # heal so that b's advert reaches a first: a hears a lower-priority master
    if a.machine.get_timer() < b.machine.get_timer():
        lan.run(a.machine.get_timer() - lan.now)  # a's advert is still lost in the partition
    lan.heal(a, b)
    lan.run(1.5)
    assert masters(lan) == ["a"] and not b.vips
    assert a.machine.stats.lower_priority_received >= 1
    fresh = [g for _, g in a.garps[n_garps:]]
    assert fresh and fresh[0].reason.startswith("dual master healed")
    assert "higher priority advert" in b.notifies[-1][1].cause


# --------------------------------------------------------------------------- tracking and faults


def test_weight_lowers_priority_and_moves_mastership():
    lan = Lan()
    a, b = elected(lan, 101, 100)
    a.machine.set_tracking(lan.now, adjust=-10)  # a failing track script with weight -10
    lan.pump()
    assert a.sent[-1][1].priority == 91  # advertised at once
    took = lan.run_until(lambda: b.state is State.MASTER, 10)
    # b discards a's priority-91 adverts; its down timer runs from a's last 101 advert
    assert took <= master_down_interval(100, 100, 2)
    assert lan.now - max(t for t, adv in a.sent if adv.priority == 101) == pytest.approx(
        master_down_interval(100, 100, 2))
    assert a.state is State.BACKUP and not a.vips


def test_fault_sends_priority_zero_and_clearing_returns_to_backup():
    lan = Lan()
    a, b = elected(lan)
    a.machine.set_tracking(lan.now, faults=("interface eth0 down",))
    lan.pump()
    assert a.state is State.FAULT and a.sent[-1][1].priority == 0 and not a.vips
    assert a.notifies[-1][1].cause == "interface eth0 down"
    lan.run(1)
    assert b.state is State.MASTER
    a.machine.set_tracking(lan.now, faults=())
    lan.pump()
    assert a.state is State.BACKUP and "fault cleared" in a.notifies[-1][1].cause
    lan.run_until(lambda: a.state is State.MASTER, 10)  # preempts again


def test_fault_at_startup():
    m = VrrpMachine(cfg(100), ip_address(A_ADDR))
    m.set_tracking(0.0, faults=("script chk down",))
    m.start(0.0)
    assert m.state is State.FAULT and m.get_timer() is None
    with pytest.raises(LocalProtocolError):
        m.start(1.0)


def test_sync_group_promote_and_demote():
    lan = Lan()
    a, b = elected(lan)
    lan.partition(a, b)  # b's group went master elsewhere; a does not hear b here
    b.machine.promote(lan.now, "sync group G: VI_2 became master")
    lan.pump()
    assert b.state is State.MASTER and b.notifies[-1][1].cause.startswith("sync group")
    b.machine.demote(lan.now, "sync group G: VI_2 left master")
    lan.pump()
    assert b.state is State.BACKUP and not b.vips
    a.machine.promote(lan.now, "no-op: already master")
    b.machine.demote(lan.now, "no-op: not master")
    lan.pump()
    assert b.transitions()[-2:] == [("BACKUP", "MASTER"), ("MASTER", "BACKUP")]


def test_ipv6_instance_sends_neighbour_adverts():
    lan = Lan()
    vip6 = ip_address("2001:2::100")
    c = InstanceConfig(name="v6", vrid=52, priority=150, version=3, family=6, advert_int_s=0.1, vips=(vip6,))
    a = lan.add("a", "fe80::1", c)
    b = lan.add("b", "fe80::2", replace(c, priority=100))
    lan.run(2)
    assert masters(lan) == ["a"] and isinstance(a.garps[0][1], SendNeighborAdvert)
    lan.crash(a)
    lan.run_until(lambda: b.state is State.MASTER, 1)


def test_machine_emits_only_on_input_and_get_timer_is_stable():
    m = VrrpMachine(cfg(100), ip_address(A_ADDR))
    assert m.get_timer() is None and m.next_action() is None
    m.start(0.0)
    while m.next_action():
        pass
    t = m.get_timer()
    assert t == pytest.approx(3 + 156 / 256)
    m.handle_timer(t - 0.001)  # early: nothing happens
    assert m.next_action() is None and m.state is State.BACKUP
    m.handle_timer(t)
    acts = []
    while (x := m.next_action()) is not None:
        acts.append(type(x).__name__)
    assert acts == ["SendAdvert", "AddVips", "SendGratuitousArp", "Notify"]


def test_garp_policy_refresh_and_no_second_set():
    lan = Lan()
    g = GarpPolicy(master_delay_s=0, master_repeat=1, master_refresh_s=2.0, master_refresh_repeat=2)
    a = lan.add("a", A_ADDR, cfg(200, garp=g))
    lan.run(10)
    t0 = a.notifies[-1][0]
    assert [(round(t - t0, 6), x.count) for t, x in a.garps] == [(0, 1), (2, 2), (4, 2), (6, 2)]


def test_a_sent_advert_is_byte_for_byte_what_keepalived_sends():
    vips = (VIP, ip_address("198.18.0.101"))
    m = VrrpMachine(InstanceConfig("fzvi", 51, 101, 3, 4, 0.1, vips), ip_address(A_ADDR))
    m.start(0)
    m.handle_timer(10)
    adv = next(a for a in iter(m.next_action, None) if isinstance(a, SendAdvert)).advert
    # keepalived 2.2.7, same instance, captured on the lab's LAN
    assert adv.encode(ip_address(A_ADDR), MCAST_V4).hex() == "31336502000a362ac6120064c6120065"
