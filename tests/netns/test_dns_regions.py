"""Region-aware DNS on the lab's "regions" topology: real clients in real prefixes.

herder runs in the lab's ``dns`` node (198.18.0.53) with the lecture's two-level chain
and tcp health checks against the tiny servers in each region. Clients in eu, us and ap
ask with dig, *without* ECS: the mapping level sees their source prefixes, as an
authoritative server sees its resolvers. Then servers are killed and the answers follow.
"""

from __future__ import annotations

import re
import time

import pytest

from herder.proc import python_executable, stop_pid

pytestmark = pytest.mark.netns

REGIONS = ("eu", "us", "ap")

CONFIG = """\
[regions.eu]
prefixes = ["{eu_prefix}"]
[regions.us]
prefixes = ["{us_prefix}"]
[regions.ap]
prefixes = ["{ap_prefix}"]

[pools.web]
initial_state = "up"
servers = [
{servers}
]
[[pools.web.checks]]
type = "tcp"
inter = "200ms"
fall = 2
rise = 1
timeout = "300ms"

[dns]
listen = "{dns}:53"
default_region = "us"

[dns.zones."example.com"]
records = ["@ NS ns1", "ns1 A {dns}", "www 300 CNAME www.example.com.edgekey.test."]
[dns.zones."edgekey.test"]
records = ["www.example.com 600 CNAME e1.dscj.edge.test."]
[dns.zones."edge.test"]
records = ["@ NS ns1", "ns1 A {dns}"]
[dns.zones."dscj.edge.test"]
records = ["@ NS ns1.edge.test."]

[dns.maps."dscj.edge.test"]
ttl = 20

[dns.names."e1.dscj.edge.test"]
pool = "web"
policy = "multivalue"
ttl = 20

[dns.latency]
"{eu_prefix}" = {{ eu = 5, us = 80, ap = 160 }}
"{us_prefix}" = {{ us = 5, eu = 80, ap = 120 }}
"{ap_prefix}" = {{ ap = 5, us = 120, eu = 160 }}
"""


def servers_of(region: str) -> set[str]:
    n = {"eu": 10, "us": 20, "ap": 30}[region]
    return {f"198.18.{n}.11", f"198.18.{n}.12"}


def dig(lab, node: str, *extra: str) -> tuple[list[tuple[str, str, str, str]], str]:
    out = lab.node(node).run(["dig", f"@{lab.vars['dns']}", "+norec", "+time=2", "+tries=2", *extra,
                              "www.example.com", "A"], timeout=15).stdout
    return re.findall(r"^(\S+)\s+(\d+)\s+IN\s+(CNAME|A)\s+(\S+)$", out, re.M), out


def a_records(records) -> set[str]:
    return {v for _, _, t, v in records if t == "A"}


def until(cond, timeout: float = 10.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def kill_server(lab, node: str) -> None:
    for p in lab.processes():
        if p["node"] == node and p["alive"]:
            stop_pid(p["pid"], start_time=p.get("start_time"))


@pytest.fixture
def region_lab(lab_up, tmp_path):
    lab = lab_up("regions")
    servers = ",\n".join(
        f'  {{ name = "{r}-rs{i}", address = "{lab.node(f"{r}-rs{i}").address}:80", region = "{r}" }}'
        for r in REGIONS for i in (1, 2))
    cfg = tmp_path / "herder.toml"
    cfg.write_text(CONFIG.format(servers=servers, **lab.vars))
    lab.node("dns").start([python_executable(), "-m", "herder", "run", str(cfg)], name="herder", ready_ports=[53],
                          ready_timeout=20)
    return lab


def test_clients_in_two_regions_get_the_same_chain_and_their_own_servers(region_lab):
    lab = region_lab
    chains = {}
    for region in REGIONS:
        records, out = dig(lab, f"{region}-client")
        chains[region] = [r for r in records if r[2] == "CNAME"]
        assert a_records(records) == servers_of(region), out
        assert {int(ttl) for _, ttl, t, _ in records if t == "A"} == {20}
    assert chains["eu"] == chains["us"] == chains["ap"] == [
        ("www.example.com.", "300", "CNAME", "www.example.com.edgekey.test."),
        ("www.example.com.edgekey.test.", "600", "CNAME", "e1.dscj.edge.test."),
    ]


def test_ecs_from_a_resolver_elsewhere_maps_to_the_subnet_region(region_lab):
    lab = region_lab
    records, out = dig(lab, "ap-client", f"+subnet={lab.vars['eu_prefix']}")
    assert a_records(records) == servers_of("eu")
    assert f"CLIENT-SUBNET: {lab.vars['eu_prefix']}/24" in out


def test_killed_servers_leave_the_answers_then_the_region(region_lab):
    lab = region_lab
    kill_server(lab, "eu-rs1")
    until(lambda: a_records(dig(lab, "eu-client")[0]) == {"198.18.10.12"}, what="eu-rs1 gone")
    kill_server(lab, "eu-rs2")
    # no eu server left: the mapping level sends eu clients to the nearest region (us, 80 ms)
    until(lambda: a_records(dig(lab, "eu-client")[0]) == servers_of("us"), what="eu clients sent to us")
    assert a_records(dig(lab, "ap-client")[0]) == servers_of("ap")

