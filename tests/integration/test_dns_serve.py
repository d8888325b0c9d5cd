"""``herder dns serve`` as users run it: real dig and dnspython against zone files.

One server process for the module (UDP and TCP on a free loopback port) serves a zone file
and a region map; the tests check the protocol as a resolver sees it: +tcp, truncation,
REFUSED, NXDOMAIN/NODATA with the SOA, ECS scope, and that garbage does not stop it.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from herder import proc
from herder.testing import wait_port

pytestmark = pytest.mark.integration

ZONE = """\
$ORIGIN example.test.
$TTL 300
@        IN SOA ns1 hostmaster 1 3600 600 86400 60
@        IN NS  ns1
ns1      IN A   127.0.0.1
www      IN A   192.0.2.80
www      IN AAAA 2001:db8::80
alias    IN CNAME www
geo   20 IN A   198.18.1.10
geo   20 IN A   198.18.2.10
sub      IN NS  ns.sub
ns.sub   IN A   192.0.2.99
""" + "".join(f"big IN A 10.0.{i // 250}.{i % 250}\n" for i in range(120))

REGIONS = "198.18.1.0/24 eu\n198.18.2.0/24 us\ndefault us\n"


def free_dns_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="module", params=["loop", "thread"])
def server(request, tmp_path_factory):
    """The server, once with UDP on the event loop and once on its own thread."""
    d: Path = tmp_path_factory.mktemp("dns-serve")
    (d / "example.test.zone").write_text(ZONE)
    (d / "regions.map").write_text(REGIONS)
    port = free_dns_port()
    log = open(d / "server.log", "wb")
    mode = ["--udp-thread"] if request.param == "thread" else []
    child = proc.spawn([sys.executable, "-m", "herder", "dns", "serve", *mode, "--listen", f"127.0.0.1:{port}",
                        "--regions", str(d / "regions.map"), str(d / "example.test.zone")],
                       name="herder-dns-serve", stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port, timeout=15)
        yield port, child
    finally:
        child.stop()
        log.close()


def dig(port: int, *args: str) -> str:
    r = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+norec", "+time=2", "+tries=1", *args],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def status(out: str) -> str:
    return re.search(r"status: (\w+)", out).group(1)


def flags(out: str) -> set[str]:
    return set(re.search(r";; flags: ([a-z ]+);", out).group(1).split())


def test_udp_answer_is_authoritative(server):
    port, _ = server
    out = dig(port, "www.example.test", "A")
    assert status(out) == "NOERROR" and "aa" in flags(out)
    assert re.search(r"^www\.example\.test\.\s+300\s+IN\s+A\s+192\.0\.2\.80$", out, re.M)


def test_tcp(server):
    port, _ = server
    out = dig(port, "+tcp", "alias.example.test", "A")
    assert "(TCP)" in out and status(out) == "NOERROR"
    assert "alias.example.test.\t300\tIN\tCNAME\twww.example.test." in out
    assert re.search(r"^www\.example\.test\.\s+300\s+IN\s+A\s+192\.0\.2\.80$", out, re.M)


def test_large_answer_truncated_over_udp_complete_over_tcp(server):
    port, _ = server
    out = dig(port, "+ignore", "+bufsize=1232", "big.example.test", "A")
    assert "tc" in flags(out) and "ANSWER: 0" in out
    out = dig(port, "+tcp", "big.example.test", "A")
    assert "tc" not in flags(out) and "ANSWER: 120" in out
    # dnspython's resolver-style fallback: UDP says TC, TCP completes
    q = dns.message.make_query("big.example.test", "A", use_edns=0, payload=1232)
    r, used_tcp = dns.query.udp_with_fallback(q, "127.0.0.1", port=port, timeout=3)
    assert used_tcp and len(r.answer[0]) == 120


def test_refused_outside_our_zones(server):
    port, _ = server
    out = dig(port, "www.example.org", "A")
    assert status(out) == "REFUSED" and "aa" not in flags(out)


def test_nxdomain_and_nodata_carry_the_soa(server):
    port, _ = server
    soa = re.compile(r"^example\.test\.\s+60\s+IN\s+SOA\s+ns1\.example\.test\. hostmaster\.example\.test\. 1 ", re.M)
    out = dig(port, "nope.example.test", "A")
    assert status(out) == "NXDOMAIN" and soa.search(out), out
    out = dig(port, "www.example.test", "MX")
    assert status(out) == "NOERROR" and "ANSWER: 0" in out and soa.search(out), out


def test_referral_for_a_delegated_name(server):
    port, _ = server
    out = dig(port, "x.sub.example.test", "A")
    assert "aa" not in flags(out) and "sub.example.test.\t300\tIN\tNS\tns.sub.example.test." in out
    assert "ns.sub.example.test.\t300\tIN\tA\t192.0.2.99" in out


def test_case_is_preserved(server):
    port, _ = server
    q = dns.message.make_query("WwW.ExAmPlE.tEsT", "A")
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r.answer[0].name.to_text() == "WwW.ExAmPlE.tEsT." and r.question[0].name.to_text() == "WwW.ExAmPlE.tEsT."


@pytest.mark.parametrize("subnet,answer", [("198.18.1.0/24", "198.18.1.10"), ("198.18.2.0/24", "198.18.2.10")])
def test_ecs_picks_the_region_and_echoes_the_scope(server, subnet, answer):
    port, _ = server
    out = dig(port, f"+subnet={subnet}", "geo.example.test", "A")
    assert f"CLIENT-SUBNET: {subnet}/24" in out
    assert re.findall(r"^geo\.example\.test\.\s+20\s+IN\s+A\s+(\S+)$", out, re.M) == [answer]


def test_malformed_packets_get_formerr_or_nothing_and_the_server_keeps_answering(server):
    port, child = server
    good = dns.message.make_query("www.example.test", "A").to_wire()
    garbage = [
        b"",
        b"\x12",
        good[:11],
        good[:-1],
        good + b"\x00",
        good[:2] + b"\x80" + good[3:],  # a response
        good[:12] + b"\xc0\x0c\x00\x01\x00\x01",  # pointer to itself
        struct.pack("!HHHHHH", 0x4242, 0, 2, 0, 0, 0) + good[12:] + good[12:],  # two questions
        bytes(range(256)) * 4,
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        for g in garbage:
            s.sendto(g, ("127.0.0.1", port))
            try:
                data, _ = s.recvfrom(65535)
            except TimeoutError:
                continue
            r = dns.message.from_wire(data)
            assert r.rcode() == dns.rcode.FORMERR
    # TCP: a bad message, then the connection is closed or answered with FORMERR
    with socket.create_connection(("127.0.0.1", port), timeout=2) as t:
        t.sendall(b"\x00\x05hello")
        data = t.recv(4096)
        assert data == b"" or dns.message.from_wire(data[2:]).rcode() == dns.rcode.FORMERR
    assert child.alive()
    r = dns.query.udp(dns.message.make_query("www.example.test", "A"), "127.0.0.1", port=port, timeout=3)
    assert r.answer[0][0].address == "192.0.2.80"


@pytest.mark.parametrize("mode", [[], ["--udp-thread"]], ids=["loop", "thread"])
def test_sigterm_stops_it_cleanly(tmp_path, mode):
    (tmp_path / "z.zone").write_text("$ORIGIN z.test.\n$TTL 60\n@ SOA ns hm 1 2 3 4 5\n")
    port = free_dns_port()
    child = proc.spawn([sys.executable, "-m", "herder", "dns", "serve", *mode, "--listen", f"127.0.0.1:{port}",
                        str(tmp_path / "z.zone")], name="herder-dns-serve")
    try:
        wait_port("127.0.0.1", port, timeout=15)
        t0 = time.monotonic()
        assert child.stop(timeout=5) == 0
        assert time.monotonic() - t0 < 5
    finally:
        child.stop()


def test_bad_zone_file_is_reported_with_its_line(tmp_path, herder_argv):
    (tmp_path / "bad.zone").write_text("$ORIGIN z.test.\n$TTL 60\n@ SOA ns hm 1 2 3 4 5\nwww IN AXX 1\n")
    r = subprocess.run([*herder_argv, "dns", "serve", str(tmp_path / "bad.zone")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert f"{tmp_path / 'bad.zone'}:4: unknown rdatatype 'AXX'" in r.stderr
