"""The director with a recording backend (no root), the native config keys, relay picking,
real-server planning."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest

from herder.config.errors import ConfigErrors
from herder.config.load import load_strings
from herder.l4.apply_nft import RecordingBackend
from herder.l4.config import L4Settings, l4_settings, specs_from_config
from herder.l4.director import Director
from herder.l4.plan import plan
from herder.l4.realserver import Change, plan_setup
from herder.l4.ruleset import Forward, Scheduler, VirtualServiceSpec
from herder.l4.userspace import ServicePicker
from herder.pool import Endpoint, Health, HealthState, Pool, PoolState, Server

pytestmark = pytest.mark.unit

TOML = """\
[l4]
backend = "recording"
seed = 7

[services.www]
mode = "tcp"
listen = ["202.103.106.5:80"]
pool = "www"
scheduler = "wrr"

[services.ftp]
mode = "tcp"
listen = "202.103.106.5:21"
pool = "ftp"
forward = "dr"
scheduler = "mh"
persistence_timeout = "10m"
persistence_granularity = 24
device = "eth0"

[pools.www]
[[pools.www.servers]]
name = "rs1"
address = "172.16.0.2:80"
[[pools.www.servers]]
name = "rs2"
address = "172.16.0.3:8000"
weight = 2

[pools.ftp]
[[pools.ftp.servers]]
name = "rs2"
address = "172.16.0.3:21"
"""


def test_native_config_gives_specs():
    cfg = load_strings([("l4.toml", TOML)])
    specs = {s.key: s for s in specs_from_config(cfg)}
    www = specs["tcp:202.103.106.5:80"]
    assert www.forward is Forward.NAT and www.scheduler is Scheduler.WRR and www.persistence_s == 0
    ftp = specs["tcp:202.103.106.5:21"]
    assert ftp.forward is Forward.DR and ftp.scheduler is Scheduler.MH and ftp.hash_key == "flow"
    assert ftp.persistence_s == 600 and ftp.netmask == "255.255.255.0" and ftp.ingress_device == "eth0"
    assert l4_settings(cfg.section("l4")).seed == 7


@pytest.mark.parametrize("bad, where", [
    ('scheduler = "wlc"', "l4.toml:9: services.www.scheduler"),
    ('table_size = 65536', "l4.toml:9: services.www.table_size"),
    ('persistence_granularity = "255.0.255.0"', "l4.toml:9: services.www.persistence_granularity"),
    ('forward = "bridge"', "l4.toml:9: services.www.forward"),
])
def test_native_config_errors_name_file_line_key(bad, where):
    text = TOML.replace('scheduler = "wrr"\n', bad + "\n", 1)
    with pytest.raises(ConfigErrors) as e:
        load_strings([("l4.toml", text)])
    assert where in str(e.value)


def test_two_services_on_one_vip_port_are_refused():
    text = TOML.replace('listen = "202.103.106.5:21"', 'listen = "202.103.106.5:80"')
    # herder check refuses it, naming the line ...
    with pytest.raises(ConfigErrors, match="also declared"):
        load_strings([("l4.toml", text)])
    # ... and so does the director, given such services some other way
    from herder.l4.config import specs_from_services

    cfg = load_strings([("l4.toml", TOML)])
    ftp = dataclasses.replace(cfg.services["ftp"], listen=cfg.services["www"].listen)
    with pytest.raises(ValueError, match="also declared"):
        specs_from_services([cfg.services["www"], ftp])


def run(coro):
    return asyncio.run(coro)


def test_director_applies_then_follows_the_pool_state():
    cfg = load_strings([("l4.toml", TOML)])
    ps = PoolState()
    ps.load(cfg.pools.values(), cfg.services.values())
    rec = RecordingBackend()

    async def scenario():
        d = Director(specs_from_config(cfg), ps, rec, L4Settings(), resolve=False, write_state=False)
        await d.start()
        assert len(rec.transactions) == 1 and rec.last[0] == "add table ip herder"
        ps.set_weight("www", "rs1", 0)
        ps.set_health("ftp", "rs2", Health(HealthState.DOWN, "L4 timeout"))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if d.updates >= 2:
                break
        # both changes arrive coalesced or one by one; never a full replace again
        assert all(not t.startswith("add table") for t in rec.transactions[1:])
        www = d.ruleset.service("tcp:202.103.106.5:80")
        assert www.dest("rs1").weight == 0 and d.ruleset.service("tcp:202.103.106.5:21").dests == ()
        await d.stop()
        assert rec.last == ["add table ip herder", "delete table ip herder",
                            "add table netdev herder_dsr", "delete table netdev herder_dsr"]

    run(scenario())


def test_director_keeps_the_previous_ruleset_when_an_update_fails():
    ps = PoolState()
    ps.load([Pool("p", (Server("a", Endpoint("10.0.0.1", 80)), Server("b", Endpoint("10.0.0.2", 80))))])
    rec = RecordingBackend()

    async def scenario():
        d = Director([VirtualServiceSpec("s", "tcp", "10.1.1.1", 80, "p")], ps, rec, resolve=False,
                     write_state=False, retry_s=0.05)
        await d.start()
        before = d.applier.ruleset
        rec.fail_next = "Error: Could not process rule: Cannot allocate memory"
        ps.set_weight("p", "a", 7)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if d.applier.failures:
                break
        assert d.applier.failures == 1 and d.applier.ruleset == before
        for _ in range(100):  # retried after retry_s without another change
            await asyncio.sleep(0.01)
            if d.applier.ruleset is not before and d.applier.last_error is None:
                break
        assert d.applier.ruleset.services[0].dest("a").weight == 7
        await d.stop()

    run(scenario())


def test_director_start_fails_when_the_first_update_fails():
    ps = PoolState()
    ps.load([Pool("p", (Server("a", Endpoint("10.0.0.1", 80)),))])
    rec = RecordingBackend()
    rec.fail_next = "Error: No such file or directory"

    async def scenario():
        d = Director([VirtualServiceSpec("s", "tcp", "10.1.1.1", 80, "p")], ps, rec, resolve=False,
                     write_state=False)
        with pytest.raises(Exception, match="previous ruleset stays in place"):
            await d.start()

    run(scenario())


def test_relay_picker_shares_and_persistence():
    ps = PoolState()
    ps.load([Pool("p", (Server("a", Endpoint("10.0.0.1", 80), 1), Server("b", Endpoint("10.0.0.2", 80), 2)))])
    spec = VirtualServiceSpec("s", "tcp", "10.1.1.1", 80, "p", scheduler=Scheduler.WRR)
    pk = ServicePicker(plan(ps.snapshot, [spec]).services[0])
    got = Counter(pk.pick(("10.9.0.1", 1000 + i), 0.0).server for i in range(300))
    assert got == {"a": 100, "b": 200}
    spec = VirtualServiceSpec("s", "tcp", "10.1.1.1", 80, "p", scheduler=Scheduler.MH, persistence_s=60,
                              netmask="255.255.255.0")
    pk = ServicePicker(plan(ps.snapshot, [spec]).services[0])
    first = pk.pick(("10.9.0.1", 1), 0.0).server
    assert all(pk.pick((f"10.9.0.{i}", i), 1.0).server == first for i in range(2, 50))
    spread = Counter(pk.pick((f"10.{i}.0.1", i), 1.0).server for i in range(1, 200))
    assert set(spread) == {"a", "b"}


def test_realserver_plan():
    changes = plan_setup(["198.18.0.100"], {"127.0.0.1"},
                         {"net.ipv4.conf.all.arp_ignore": "0", "net.ipv4.conf.all.arp_announce": "0",
                          "net.ipv4.conf.eth0.arp_ignore": "1", "net.ipv4.conf.eth0.arp_announce": "0"}, ["eth0"])
    assert [str(c) for c in changes] == [
        "added 198.18.0.100/32 to lo",
        "net.ipv4.conf.all.arp_ignore: 0 -> 1",
        "net.ipv4.conf.all.arp_announce: 0 -> 2",
        "net.ipv4.conf.eth0.arp_announce: 0 -> 2",
    ]
    assert plan_setup(["198.18.0.100"], {"198.18.0.100"}, {"net.ipv4.conf.all.arp_ignore": "1"}, []) == []
    assert str(Change("address", "198.18.0.100/32", None)) == "removed 198.18.0.100/32 from lo"
    with pytest.raises(ValueError):
        plan_setup(["not-an-ip"], set(), {}, [])


def test_a_reload_adds_changes_and_removes_virtual_services():
    """Director.apply_config (SIGHUP): the new services reach the kernel in the next
    transaction (no table replaced); an unchanged config changes nothing; a changed [l4]
    section is left for a restart."""
    cfg = load_strings([("l4.toml", TOML)])
    ps = PoolState()
    ps.load(cfg.pools.values(), cfg.services.values())
    rec = RecordingBackend()
    new_toml = TOML.replace('scheduler = "wrr"', 'scheduler = "rr"').replace(
        '[services.ftp]', '[services.smtp]\nmode = "tcp"\nlisten = "202.103.106.5:25"\npool = "www"\n\n[services.ftp]')
    new_toml = new_toml[:new_toml.index("[services.ftp]")] + new_toml[new_toml.index("[pools.www]"):]

    async def scenario():
        d = Director(specs_from_config(cfg), ps, rec, l4_settings(cfg.section("l4")), resolve=False,
                     write_state=False)
        await d.start()
        cfg2 = load_strings([("l4.toml", new_toml)])
        ps.load(cfg2.pools.values(), cfg2.services.values())
        assert set(d.apply_config(cfg2)) == {"service:www", "service:smtp", "service:ftp"}
        for _ in range(200):
            await asyncio.sleep(0.01)
            if d.ruleset.service("tcp:202.103.106.5:25") is not None:
                break
        assert d.ruleset.service("tcp:202.103.106.5:25") is not None
        assert d.ruleset.service("tcp:202.103.106.5:21") is None
        assert d.ruleset.service("tcp:202.103.106.5:80").spec.scheduler is Scheduler.RR
        assert all(not t.startswith("add table") for t in rec.transactions[1:])
        n = len(rec.transactions)
        assert set(d.apply_config(cfg2)) == {"service:www", "service:smtp"}  # nothing new to do
        await asyncio.sleep(0.05)
        assert len(rec.transactions) == n
        assert d.apply_config(load_strings([("l4.toml", new_toml.replace("seed = 7", "seed = 8"))])) == ()
        await d.stop()

    run(scenario())
