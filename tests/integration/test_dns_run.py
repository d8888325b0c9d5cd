"""``herder run`` with a [dns] section: the two-level hierarchy, health, weights, failover.

One herder process for the module runs the runtime API, health checks against two real
backends (herder's demo backend on 127.0.0.2 and 127.0.0.3), and the DNS server with the
lecture's chain: ``www.example.com`` CNAME ``www.example.com.edgekey.test`` CNAME
``e1.dscj.edge.test``, whose A records come from the region the client's ECS prefix maps to.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from herder import proc
from herder.testing import wait_port

pytestmark = pytest.mark.integration


def free_port(host: str = "127.0.0.1", udp_too: bool = False) -> int:
    for _ in range(50):
        with socket.socket() as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


CONFIG = """\
[api]
listen = "127.0.0.1:{api}"

[regions.eu]
prefixes = ["198.18.1.0/24"]
[regions.us]
prefixes = ["198.18.2.0/24"]

[pools.web]
servers = [
  {{ name = "eu1", address = "198.18.1.11:80", region = "eu" }},
  {{ name = "eu2", address = "198.18.1.12:80", region = "eu" }},
  {{ name = "us1", address = "198.18.2.11:80", region = "us" }},
]

[pools.checked]
initial_state = "up"
servers = [
  {{ name = "b1", address = "127.0.0.2:{p1}" }},
  {{ name = "b2", address = "127.0.0.3:{p2}" }},
]
[[pools.checked.checks]]
type = "tcp"
inter = "100ms"
fall = 2
rise = 1
timeout = "500ms"

[pools.weighted]
servers = [
  {{ name = "a", address = "192.0.2.1:80", weight = 3 }},
  {{ name = "b", address = "192.0.2.2:80", weight = 1 }},
]

[pools.fo]
servers = [
  {{ name = "p1", address = "192.0.2.11:80" }},
  {{ name = "s1", address = "192.0.2.21:80", backup = true }},
]

[dns]
listen = "127.0.0.1:{port}"
default_region = "us"

[dns.zones."example.com"]
records = [
  "@ NS ns1",
  "ns1 A 127.0.0.1",
  "www 300 CNAME www.example.com.edgekey.test.",
]
[dns.zones."edgekey.test"]
records = ["www.example.com 600 CNAME e1.dscj.edge.test."]
[dns.zones."edge.test"]
records = ["@ NS ns1", "ns1 A 127.0.0.1"]
[dns.zones."dscj.edge.test"]
records = ["@ NS ns1.edge.test."]

[dns.maps."dscj.edge.test"]
ttl = 20

[dns.names."e1.dscj.edge.test"]
pool = "web"
policy = "multivalue"
ttl = 30

[dns.names."app.example.com"]
pool = "checked"
policy = "multivalue"
ttl = 5

[dns.names."weighted.example.com"]
pool = "weighted"
policy = "weighted"

[dns.names."failover.example.com"]
pool = "fo"
policy = "failover"
"""


def backend(host: str, port: int, name: str) -> proc.Child:
    child = proc.spawn([sys.executable, "-m", "herder.demo.backend", "--host", host, "--port", str(port),
                        "--name", name], name=name)
    wait_port(host, port, timeout=15)
    return child


@pytest.fixture(scope="module")
def herder(tmp_path_factory):
    d = tmp_path_factory.mktemp("dns-run")
    ports = {"api": free_port(), "port": free_port(udp_too=True), "p1": free_port("127.0.0.2"),
             "p2": free_port("127.0.0.3")}
    cfg = d / "herder.toml"
    cfg.write_text(CONFIG.format(**ports))
    backends = {"b1": backend("127.0.0.2", ports["p1"], "b1"), "b2": backend("127.0.0.3", ports["p2"], "b2")}
    log = open(d / "herder.log", "wb")
    child = proc.spawn([sys.executable, "-m", "herder", "run", str(cfg)], name="herder-run", stdout=log,
                       stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", ports["port"], timeout=20)
        yield {"ports": ports, "backends": backends, "child": child, "log": d / "herder.log"}
    finally:
        child.stop()
        for b in backends.values():
            b.stop()
        log.close()


def ask(port: int, name: str, rdtype: str = "A", ecs: str | None = None) -> dns.message.Message:
    opts = []
    if ecs:
        addr, plen = ecs.split("/")
        opts.append(dns.edns.ECSOption(addr, int(plen)))
    q = dns.message.make_query(name, rdtype, use_edns=0, options=opts)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def addresses(m: dns.message.Message) -> set[str]:
    return {r.address for rr in m.answer if rr.rdtype in (1, 28) for r in rr}


def until(cond, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def api_post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_lecture_chain_with_dig_two_ecs_values(herder):
    port = herder["ports"]["port"]
    outs = {}
    for subnet in ("198.18.1.0/24", "198.18.2.0/24"):
        r = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+norec", "+time=2", "+tries=1",
                            f"+subnet={subnet}", "www.example.com", "A"], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        outs[subnet] = r.stdout
    chains = {}
    servers = {}
    for subnet, out in outs.items():
        assert f"CLIENT-SUBNET: {subnet}/24" in out  # scope = the matched /24
        records = re.findall(r"^(\S+)\s+(\d+)\s+IN\s+(CNAME|A)\s+(\S+)$", out, re.M)
        assert [t for _, _, t, _ in records][:2] == ["CNAME", "CNAME"]
        chains[subnet] = [r for r in records if r[2] == "CNAME"]
        servers[subnet] = {(name, int(ttl), v) for name, ttl, t, v in records if t == "A"}
    expected_chain = [("www.example.com.", "300", "CNAME", "www.example.com.edgekey.test."),
                      ("www.example.com.edgekey.test.", "600", "CNAME", "e1.dscj.edge.test.")]
    assert chains["198.18.1.0/24"] == chains["198.18.2.0/24"] == expected_chain
    assert servers["198.18.1.0/24"] == {("e1.dscj.edge.test.", 30, "198.18.1.11"),
                                        ("e1.dscj.edge.test.", 30, "198.18.1.12")}
    assert servers["198.18.2.0/24"] == {("e1.dscj.edge.test.", 30, "198.18.2.11")}


def test_lecture_chain_with_dnspython(herder):
    port = herder["ports"]["port"]
    eu = ask(port, "www.example.com", ecs="198.18.1.0/24")
    us = ask(port, "www.example.com", ecs="198.18.2.0/24")
    assert [rr.to_text() for rr in eu.answer[:2]] == [rr.to_text() for rr in us.answer[:2]]
    assert addresses(eu) == {"198.18.1.11", "198.18.1.12"} and addresses(us) == {"198.18.2.11"}
    assert eu.options[0].scopelen == 24


def test_a_stopped_backend_disappears_and_returns(herder):
    port, backends = herder["ports"]["port"], herder["backends"]
    until(lambda: addresses(ask(port, "app.example.com")) == {"127.0.0.2", "127.0.0.3"}, what="both backends")
    backends["b1"].stop()
    until(lambda: addresses(ask(port, "app.example.com")) == {"127.0.0.3"}, what="b1 gone from the answers")
    backends["b1"] = backend("127.0.0.2", herder["ports"]["p1"], "b1")
    until(lambda: addresses(ask(port, "app.example.com")) == {"127.0.0.2", "127.0.0.3"}, what="b1 back")


def test_weighted_answers_split_by_weight(herder):
    port = herder["ports"]["port"]
    n = 2000
    counts = Counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for _ in range(n):
            q = dns.message.make_query("weighted.example.com", "A")
            s.sendto(q.to_wire(), ("127.0.0.1", port))
            r = dns.message.from_wire(s.recv(4096))
            counts[r.answer[0][0].address] += 1
    assert set(counts) == {"192.0.2.1", "192.0.2.2"}
    assert abs(counts["192.0.2.1"] / n - 0.75) < 0.04, counts


def test_failover_switches_and_returns(herder):
    port, api = herder["ports"]["port"], herder["ports"]["api"]
    assert addresses(ask(port, "failover.example.com")) == {"192.0.2.11"}
    api_post(api, "/pools/fo/servers/p1/admin", {"mode": "maint"})
    until(lambda: addresses(ask(port, "failover.example.com")) == {"192.0.2.21"}, what="secondary")
    api_post(api, "/pools/fo/servers/p1/admin", {"mode": "ready"})
    until(lambda: addresses(ask(port, "failover.example.com")) == {"192.0.2.11"}, what="primary back")


def test_nxdomain_nodata_refused_through_run(herder):
    port = herder["ports"]["port"]
    r = ask(port, "nope.example.com")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].rdtype == 6
    r = ask(port, "app.example.com", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority[0].rdtype == 6
    assert ask(port, "example.org").rcode() == dns.rcode.REFUSED


def test_runtime_api_shows_the_dns_server(herder):
    api = herder["ports"]["api"]
    with urllib.request.urlopen(f"http://127.0.0.1:{api}/dns", timeout=5) as r:
        st = json.loads(r.read())
    assert st["listen"] == [f"127.0.0.1:{herder['ports']['port']}"]
    assert "e1.dscj.edge.test." in st["names"] and st["maps"] == ["dscj.edge.test."]
    assert st["view_version"] >= 1 and st["counters"]["misses"] >= 1


SPLIT_COMMON = """\
[regions.eu]
prefixes = ["198.18.1.0/24"]
[regions.us]
prefixes = ["198.18.2.0/24"]
[pools.web]
servers = [
  { name = "eu1", address = "198.18.1.11:80", region = "eu" },
  { name = "us1", address = "198.18.2.11:80", region = "us" },
]
"""

SPLIT_GLOBAL = """\
[dns]
listen = "127.0.0.1:{port}"
[dns.zones."edge.test"]
records = ["@ NS ns1", "ns1 A 127.0.0.1"]
[dns.zones."dscj.edge.test"]
records = ["@ NS ns1.edge.test."]
[dns.maps."dscj.edge.test"]
ttl = 600
local = []
[dns.maps."dscj.edge.test".regions.eu]
name_servers = {{ "ns1.eu.edge.test" = "127.0.0.11" }}
[dns.maps."dscj.edge.test".regions.us]
name_servers = {{ "ns1.us.edge.test" = "127.0.0.12" }}
"""

SPLIT_REGION = """\
[dns]
listen = "127.0.0.11:{port}"
[dns.zones."dscj.edge.test"]
records = ["@ NS ns1.eu.edge.test."]
[dns.names."e1.dscj.edge.test"]
pool = "web"
ttl = 20
[dns.maps."dscj.edge.test"]
role = "region"
region = "eu"
"""


def test_global_and_regional_levels_as_separate_processes(tmp_path):
    gport, rport = free_port(udp_too=True), free_port("127.0.0.11", udp_too=True)
    (tmp_path / "common.toml").write_text(SPLIT_COMMON)
    (tmp_path / "global.toml").write_text(SPLIT_GLOBAL.format(port=gport))
    (tmp_path / "eu.toml").write_text(SPLIT_REGION.format(port=rport))
    procs = [proc.spawn([sys.executable, "-m", "herder", "run", str(tmp_path / "common.toml"), str(tmp_path / f)],
                        name=f) for f in ("global.toml", "eu.toml")]
    try:
        wait_port("127.0.0.1", gport, timeout=20)
        wait_port("127.0.0.11", rport, timeout=20)
        ref = ask(gport, "e1.dscj.edge.test", ecs="198.18.1.0/24")
        assert not ref.answer and not ref.flags & dns.flags.AA
        assert ref.authority[0].to_text() == "dscj.edge.test. 600 IN NS ns1.eu.edge.test."
        glue = ref.additional[0][0].address
        assert glue == "127.0.0.11"
        q = dns.message.make_query("e1.dscj.edge.test", "A")
        ans = dns.query.udp(q, glue, port=rport, timeout=3)
        assert ans.flags & dns.flags.AA and addresses(ans) == {"198.18.1.11"} and ans.answer[0].ttl == 20
        ref = ask(gport, "e1.dscj.edge.test", ecs="198.18.2.0/24")
        assert ref.authority[0].to_text() == "dscj.edge.test. 600 IN NS ns1.us.edge.test."
    finally:
        for p in procs:
            p.stop()


def test_config_error_in_dns_stops_run_with_file_and_line(tmp_path, herder_argv):
    f = tmp_path / "bad.toml"
    f.write_text(textwrap.dedent("""\
        [dns]
        listen = "127.0.0.1:5300"
        [dns.zones."example.com"]
        records = ["www A 192.0.2.1"]
        [dns.names."www.example.com"]
        pool = "missing"
        """))
    r = subprocess.run([*herder_argv, "run", str(f)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"{f}:6: dns.names.www.example.com.pool: pool 'missing' is not defined" in r.stderr


def test_sighup_serves_the_changed_zone_without_a_restart(tmp_path):
    """gdnsd reloads zone data without a restart; so does a SIGHUP here. A listener change
    still needs one, and the log says so."""
    port = free_port(udp_too=True)
    zone = tmp_path / "example.test.zone"
    zone.write_text("$ORIGIN example.test.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n"
                    "@ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN A 198.18.0.1\n")
    cfg = tmp_path / "dns.toml"
    cfg.write_text(f'[dns]\nlisten = "127.0.0.1:{port}"\n[dns.zones."example.test"]\nfile = "{zone}"\n')
    log = tmp_path / "herder.log"
    out = open(log, "w")
    p = proc.spawn([proc.python_executable(), "-m", "herder", "run", str(cfg)], name="herder", stdout=out, stderr=out)
    try:
        wait_port("127.0.0.1", port)

        def www() -> list[str]:
            r = dns.query.udp(dns.message.make_query("www.example.test", "A"), "127.0.0.1", port=port, timeout=2)
            return sorted(rr.address for rrset in r.answer for rr in rrset)

        assert www() == ["198.18.0.1"]
        zone.write_text(zone.read_text().replace("198.18.0.1", "198.18.0.2\nwww IN A 198.18.0.3"))
        os.kill(p.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while www() != ["198.18.0.2", "198.18.0.3"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert www() == ["198.18.0.2", "198.18.0.3"]
        text = log.read_text()
        assert "dns: reloaded: 1 zone(s)" in text and "restart is needed" not in text
        cfg.write_text(cfg.read_text().replace(f":{port}", f":{free_port(udp_too=True)}"))
        os.kill(p.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "restart is needed" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "section(s) dns changed: a restart is needed" in log.read_text()
        assert www() == ["198.18.0.2", "198.18.0.3"]  # still serving on the old listener
    finally:
        p.stop()
