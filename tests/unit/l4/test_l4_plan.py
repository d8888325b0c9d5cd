"""The pure L4 plan: pool snapshot + virtual services -> ruleset (tables, ids, quiescing)."""

from __future__ import annotations

from collections import Counter

import pytest

from herder.l4.plan import hash_table, interleave, plan
from herder.l4.ruleset import (
    MARK_BASE,
    Forward,
    Scheduler,
    VirtualServiceSpec,
    ruleset_from_json,
    ruleset_to_json,
)
from herder.pool import AdminCause, AdminMode, Endpoint, Health, HealthState, Pool, PoolState, Server

pytestmark = pytest.mark.unit

VIP = "202.103.106.5"


def table1() -> tuple[PoolState, list[VirtualServiceSpec]]:
    """The lecture's Table 1: two services on one VIP, weights 1 and 2, one port-mapped server."""
    ps = PoolState()
    ps.load([
        Pool("www", (Server("rs1", Endpoint("172.16.0.2", 80), 1), Server("rs2", Endpoint("172.16.0.3", 8000), 2))),
        Pool("ftp", (Server("rs2", Endpoint("172.16.0.3", 21), 1),)),
    ])
    specs = [VirtualServiceSpec("www", "tcp", VIP, 80, "www", scheduler=Scheduler.WRR),
             VirtualServiceSpec("ftp", "tcp", VIP, 21, "ftp", scheduler=Scheduler.WRR)]
    return ps, specs


def shares(svc) -> dict[str, int]:
    names = {d.id: d.server for d in svc.dests}
    return dict(Counter(names[i] for i in svc.table))


def test_table1_weights_and_port_mapping():
    ps, specs = table1()
    rs = plan(ps.snapshot, specs)
    www = rs.service(f"tcp:{VIP}:80")
    assert shares(www) == {"rs1": 1, "rs2": 2}
    assert {d.server: d.endpoint for d in www.dests} == {"rs1": "172.16.0.2:80", "rs2": "172.16.0.3:8000"}
    ftp = rs.service(f"tcp:{VIP}:21")
    assert [d.endpoint for d in ftp.dests] == ["172.16.0.3:21"]
    # one id per (service, server): rs2 has two destinations
    assert len({d.id for d in rs.dests}) == 3
    assert all(d.id & 0xFF000000 == MARK_BASE for d in rs.dests)


def test_ids_are_stable_and_never_reused():
    ps, specs = table1()
    a = plan(ps.snapshot, specs)
    ps.set_weight("www", "rs1", 5)
    b = plan(ps.snapshot, specs, previous=a)
    assert {(d.service, d.server): d.id for d in a.dests} == {(d.service, d.server): d.id for d in b.dests}
    ps.load([Pool("www", (Server("rs2", Endpoint("172.16.0.3", 8000), 2),)), Pool("ftp", ())])
    c = plan(ps.snapshot, specs, previous=b)
    ps.load([Pool("www", (Server("rs1", Endpoint("172.16.0.2", 80), 1), Server("rs2", Endpoint("172.16.0.3", 8000), 2))),
             Pool("ftp", ())])
    d = plan(ps.snapshot, specs, previous=c)
    old_rs1 = a.service(f"tcp:{VIP}:80").dest("rs1").id
    assert d.service(f"tcp:{VIP}:80").dest("rs1").id != old_rs1  # came back: a fresh id


def test_weight_zero_quiesces_and_down_removes():
    ps, specs = table1()
    ps.set_weight("www", "rs1", 0)
    rs = plan(ps.snapshot, specs)
    www = rs.service(f"tcp:{VIP}:80")
    rs1 = www.dest("rs1")
    assert rs1 is not None and rs1.weight == 0 and rs1.declared_weight == 0
    assert rs1.id in www.alive and rs1.id not in www.table
    ps.set_weight("www", "rs1", None)
    ps.set_health("www", "rs1", Health(HealthState.DOWN, "L4 connection refused"))
    rs = plan(ps.snapshot, specs)
    assert rs.service(f"tcp:{VIP}:80").dest("rs1") is None


def test_down_with_quiesce_on_failure_keeps_the_destination():
    ps, specs = table1()
    specs[0] = VirtualServiceSpec("www", "tcp", VIP, 80, "www", on_failure="quiesce")
    ps.set_health("www", "rs1", Health(HealthState.DOWN, "L4 timeout"))
    www = plan(ps.snapshot, specs).service(f"tcp:{VIP}:80")
    assert www.dest("rs1").weight == 0 and www.dest("rs1").id in www.alive
    ps.set_admin("www", "rs1", AdminMode.MAINT, AdminCause.API)
    www = plan(ps.snapshot, specs).service(f"tcp:{VIP}:80")
    assert www.dest("rs1") is None  # maintenance is never quiesced


def test_drain_is_quiesced():
    ps, specs = table1()
    ps.set_admin("www", "rs2", AdminMode.DRAIN, AdminCause.API)
    www = plan(ps.snapshot, specs).service(f"tcp:{VIP}:80")
    assert www.dest("rs2").weight == 0 and set(www.table) == {www.dest("rs1").id}


def test_rr_ignores_weights_and_empty_pool_has_no_table():
    ps, specs = table1()
    specs[0] = VirtualServiceSpec("www", "tcp", VIP, 80, "www", scheduler=Scheduler.RR)
    assert shares(plan(ps.snapshot, specs).service(f"tcp:{VIP}:80")) == {"rs1": 1, "rs2": 1}
    for name in ("rs1", "rs2"):
        ps.set_health("www", name, Health(HealthState.DOWN))
    www = plan(ps.snapshot, specs).service(f"tcp:{VIP}:80")
    assert www.table == () and www.dests == ()


def test_backups_serve_only_when_no_active_server_does():
    ps = PoolState()
    ps.load([Pool("p", (Server("a", Endpoint("10.0.0.1", 80)), Server("sorry", Endpoint("10.0.0.9", 80), backup=True)))])
    spec = VirtualServiceSpec("s", "tcp", "10.1.1.1", 80, "p")
    svc = plan(ps.snapshot, [spec]).services[0]
    assert shares(svc) == {"a": 1} and svc.dest("sorry").weight == 0
    ps.set_health("p", "a", Health(HealthState.DOWN))
    assert shares(plan(ps.snapshot, [spec]).services[0]) == {"sorry": 1}


def test_mh_is_deterministic_and_moves_few_slots():
    ps = PoolState()
    servers = tuple(Server(f"rs{i}", Endpoint(f"10.0.0.{i}", 80)) for i in range(1, 11))
    ps.load([Pool("p", servers)])
    spec = VirtualServiceSpec("s", "tcp", "10.1.1.1", 80, "p", scheduler=Scheduler.MH)
    a = plan(ps.snapshot, [spec]).services[0]
    b = plan(ps.snapshot, [spec]).services[0]
    assert a.table == b.table and len(a.table) == 65537
    counts = Counter(a.table)
    assert max(counts.values()) - min(counts.values()) <= 1
    ps.set_health("p", "rs3", Health(HealthState.DOWN))
    c = plan(ps.snapshot, [spec], previous=plan(ps.snapshot, [spec])).services[0]
    names_a = [{d.id: d.server for d in a.dests}[i] for i in a.table]
    names_c = [{d.id: d.server for d in c.dests}[i] for i in c.table]
    moved_others = sum(1 for x, y in zip(names_a, names_c, strict=True) if x != "rs3" and x != y)
    assert moved_others < 0.03 * 65537


def test_dr_cannot_map_ports_and_host_names_are_left_out():
    ps = PoolState()
    ps.load([Pool("p", (Server("a", Endpoint("10.0.0.1", 8080)), Server("b", Endpoint("backend.example", 80))))])
    spec = VirtualServiceSpec("s", "tcp", "10.1.1.1", 80, "p", forward=Forward.DR, ingress_device="eth0")
    rs = plan(ps.snapshot, [spec])
    assert [d.endpoint for d in rs.services[0].dests] == ["10.0.0.1:80"]
    assert any("cannot map ports" in p for p in rs.problems)
    assert any("backend.example" in p for p in rs.problems)


def test_missing_pool_and_duplicate_keys():
    ps = PoolState()
    spec = VirtualServiceSpec("s", "tcp", "10.1.1.1", 80, "nope")
    rs = plan(ps.snapshot, [spec])
    assert rs.services[0].dests == () and "does not exist" in rs.problems[0]
    with pytest.raises(ValueError, match="declared twice"):
        plan(ps.snapshot, [spec, spec])


@pytest.mark.parametrize("kwargs, message", [
    ({"vip": "300.1.1.1"}, "not an IP address"),
    ({"vip": "::1"}, "only IPv4"),
    ({"port": 0}, "outside 1..65535"),
    ({"proto": "sctp"}, "not tcp or udp"),
    ({"netmask": "255.0.255.0"}, "netmask"),
    ({"table_size": 65536}, "not a prime"),
    ({"persistence_s": -1}, "persistence"),
])
def test_bad_specs_are_clear_errors(kwargs, message):
    base = {"name": "s", "proto": "tcp", "vip": "10.1.1.1", "port": 80, "pool": "p"}
    with pytest.raises(ValueError, match=message):
        VirtualServiceSpec(**{**base, **kwargs})


def test_weighted_tables():
    assert Counter(interleave([1, 2])) == {0: 1, 1: 2}
    assert interleave([2, 4]) == interleave([1, 2])
    seq = interleave([1, 3])
    assert seq.index(0) > 0  # spread, not a burst at the start
    assert len(interleave([65535, 65535, 1])) <= 65536
    t = hash_table([1, 2])
    assert len(t) == 256 and abs(Counter(t)[1] / 256 - 2 / 3) < 0.01


def test_ruleset_json_round_trip():
    ps, specs = table1()
    rs = plan(ps.snapshot, specs)
    back = ruleset_from_json(ruleset_to_json(rs, tables=True))
    assert back == rs
