"""Tracking weights (keepalived's rules), the GARP / NA frames, and notify script words."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from herder.ha.vrrp.actions import garp_frame, mac_bytes, na_message, vmac_address
from herder.ha.vrrp.machine import State
from herder.ha.vrrp.notify import NotifyScripts, state_word
from herder.ha.vrrp.settings import InstanceSpec, ScriptSpec, TrackRef, TrackService, parse_vip
from herder.ha.vrrp.track import TrackResult, evaluate

pytestmark = pytest.mark.unit

OK, KO = TrackResult(True, "exit status 0"), TrackResult(False, "exit status 1")


def spec(**kw) -> InstanceSpec:
    return InstanceSpec(name="VI_1", interface="eth0", vrid=51, vips=(parse_vip("198.18.0.100"),), **kw)


def run(inst: InstanceSpec, *, scripts=None, results=None, links=None, services=None, group=False):
    scripts = scripts or {}
    return evaluate(inst, scripts, results or {}, links or {"eth0": OK}, services or {}, own_links=["eth0"],
                    in_sync_group=group)


# (script weight, ref weight, reverse, result, expected adjust, expected fault)
WEIGHTS = [
    (2, None, False, OK, 2, False),      # the lecture: +2 while haproxy runs
    (2, None, False, KO, 0, False),
    (-20, None, False, KO, -20, False),
    (-20, None, False, OK, 0, False),
    (0, None, False, KO, 0, True),       # weight 0: failure means FAULT
    (0, None, True, OK, 0, True),        # weight 0 reverse: success means FAULT
    (2, -30, False, KO, -30, False),     # the instance's weight overrides the script's
    (5, None, True, OK, -5, False),      # reverse flips the direction
    (-5, None, True, KO, 5, False),
]


@pytest.mark.parametrize("sw, rw, rev, res, adjust, fault", WEIGHTS)
def test_script_weights_follow_keepalived(sw, rw, rev, res, adjust, fault):
    inst = spec(track_scripts=(TrackRef("chk", rw),))
    scripts = {"chk": ScriptSpec("chk", "true", weight=sw, reverse=rev)}
    a, faults = run(inst, scripts=scripts, results={"chk": res})
    assert a == adjust and bool(faults) == fault


def test_own_interface_down_is_a_fault_and_tracked_interfaces_weigh():
    inst = spec(track_interfaces=(TrackRef("eth1", 0), TrackRef("eth2", -10)))
    a, faults = run(inst, links={"eth0": TrackResult(False, "no carrier"), "eth1": OK, "eth2": KO})
    assert a == -10 and faults == ("interface eth0 down: no carrier",)
    a, faults = run(inst, links={"eth0": OK, "eth2": OK})
    assert faults == ("interface eth1 missing",)


def test_sync_group_members_track_with_weight_zero():
    inst = spec(track_scripts=(TrackRef("chk"),))
    scripts = {"chk": ScriptSpec("chk", "true", weight=-50)}
    assert run(inst, scripts=scripts, results={"chk": KO}) == (-50, ())
    a, faults = run(inst, scripts=scripts, results={"chk": KO}, group=True)
    assert a == 0 and faults == ("script chk down: exit status 1",)


def test_service_tracking():
    inst = spec(track_services=(TrackService(service="www", min_up=2), TrackService(pool="web", weight=5)))
    services = {"service www": TrackResult(False, "1 usable server(s) in pool web, 2 needed"),
                "pool web": TrackResult(True, "3 usable")}
    a, faults = run(inst, services=services)
    assert a == 5 and faults == ("service www down: 1 usable server(s) in pool web, 2 needed",)


def test_vmac_and_frames():
    assert vmac_address(51) == "00:00:5e:00:01:33" and vmac_address(1, 6) == "00:00:5e:00:02:01"
    mac = mac_bytes("00:00:5e:00:01:33")
    f = garp_frame(mac, ip_address("198.18.0.100"))
    assert len(f) == 60
    assert f[:14].hex() == "ffffffffffff" + "00005e000133" + "0806"
    # ARP request, sender = target = the VIP, target MAC broadcast: what keepalived sends
    assert f[14:42].hex() == ("0001" "0800" "06" "04" "0001" "00005e000133" "c6120064" "ffffffffffff" "c6120064")
    na = na_message(mac_bytes("02:00:00:00:00:02"), ip_address("2001:2::100"))
    assert na[:8].hex() == "88000000" "20000000"  # type 136, Override flag
    assert na[8:24] == ip_address("2001:2::100").packed and na[24:].hex() == "0201" "020000000002"


def test_notify_words_and_order():
    s = NotifyScripts(master="m.sh", backup="b.sh", stop="s.sh", notify="n.sh")
    assert s.for_state(State.MASTER) == ["m.sh"] and s.for_state(State.FAULT) == []
    assert state_word(State.INITIALIZE) == "STOP" and state_word(State.BACKUP) == "BACKUP"
