"""DNS discovery against a real authoritative server started by the test (dnspython, UDP).

The server answers from a zone dict the test edits while discovery runs; discovery must
follow the changes when the TTL expires, keep its set through failures and NXDOMAIN
(for hold_nx), and name servers HAProxy server-template style.
"""

from __future__ import annotations

import asyncio
import logging

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from herder.config.load import load_text
from herder.discovery.engine import DiscoveryManager
from herder.pool.model import Endpoint
from herder.pool.state import PoolState

pytestmark = pytest.mark.integration

ZONE = "example.test."
SOA = "ns.example.test. hostmaster.example.test. 1 60 60 600 1"


class AuthServer(asyncio.DatagramProtocol):
    """A small authoritative server for example.test (as dnspython's nanonameserver):
    ``records[(name, type)] = (ttl, [rdata text...])``. Unknown names get NXDOMAIN, known
    names without the type NODATA, both with the SOA (negative TTL 1 s). ``queries``
    records (loop time, name, type) of every query."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.queries: list[tuple[float, str, str]] = []
        self.silent = False
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> AuthServer:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr) -> None:
        q = dns.message.from_wire(data)
        question = q.question[0]
        name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
        self.queries.append((asyncio.get_running_loop().time(), name, rdtype))
        if self.silent:
            return
        r = self.handle(q, name, rdtype)
        assert self.transport is not None
        self.transport.sendto(r.to_wire(), addr)

    def handle(self, q: dns.message.Message, name: str, rdtype: str) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        entry = self.records.get((name, rdtype))
        if entry is not None:
            ttl, texts = entry
            r.answer.append(dns.rrset.from_text(name, ttl, "IN", rdtype, *texts))
            if rdtype == "SRV":  # addresses of the targets we know, as real servers do
                for text in texts:
                    target = text.split()[-1].lower()
                    if (target, "A") in self.records:
                        t_ttl, addrs = self.records[(target, "A")]
                        r.additional.append(dns.rrset.from_text(target, t_ttl, "IN", "A", *addrs))
            return r
        if not any(n == name for n, _ in self.records):
            r.set_rcode(dns.rcode.NXDOMAIN)
        r.authority.append(dns.rrset.from_text(ZONE, 60, "IN", "SOA", SOA))
        return r


def make(port: int, name: str, extra: str = "") -> tuple[PoolState, DiscoveryManager]:
    frag = load_text("herder.toml", f'[pools.web]\n[[pools.web.discovery]]\ntype = "dns"\nname = "{name}"\n'
                                    f'resolver = "127.0.0.1:{port}"\ntimeout = "300ms"\n{extra}')
    assert frag.ctx.errors == [], [str(e) for e in frag.ctx.errors]
    state = PoolState()
    state.load(frag.pools.values())
    return state, DiscoveryManager(state)


def servers(state: PoolState) -> dict[str, str]:
    return {v.name: str(v.server.address) for v in state.snapshot.pool("web").servers}


async def until(pred, timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def test_a_records_followed_at_ttl_expiry():
    async def main():
        auth = await AuthServer().start()
        auth.records[("api.example.test.", "A")] = (1, ["192.0.2.1", "192.0.2.2"])
        state, mgr = make(auth.port, "api.example.test", 'port = 8080\nprefix = "api"\nttl_min = "100ms"')
        await mgr.start()
        assert servers(state) == {"api1": "192.0.2.1:8080", "api2": "192.0.2.2:8080"}
        # one record goes, another comes: api2 keeps its name, the newcomer takes api1
        auth.records[("api.example.test.", "A")] = (1, ["192.0.2.2", "192.0.2.3"])
        await until(lambda: servers(state) == {"api1": "192.0.2.3:8080", "api2": "192.0.2.2:8080"})
        await mgr.stop()
        auth.close()
        return auth.queries

    queries = asyncio.run(main())
    times = [t for t, name, rdtype in queries if name == "api.example.test." and rdtype == "A"]
    # re-resolution waits for the 1 s TTL, not for ttl_min (a lower bound only slowness cannot break)
    assert all(b - a >= 0.9 for a, b in zip(times, times[1:], strict=False)), times


def test_srv_records_with_ports_weights_and_priorities():
    async def main():
        auth = await AuthServer().start()
        auth.records[("_http._tcp.example.test.", "SRV")] = (1, [
            "10 5 8081 a.example.test.", "10 0 8082 b.example.test.", "20 1 8083 c.example.test."])
        auth.records[("a.example.test.", "A")] = (60, ["192.0.2.1"])
        auth.records[("b.example.test.", "A")] = (60, ["192.0.2.2"])
        auth.records[("c.example.test.", "A")] = (60, ["192.0.2.3"])
        state, mgr = make(auth.port, "_http._tcp.example.test", 'prefix = "web"\nttl_max = "200ms"\nttl_min = "50ms"')
        await mgr.start()
        view = state.snapshot.pool("web")
        got = {v.name: (v.server.address, v.server.weight, v.server.backup) for v in view.servers}
        assert got == {
            "web1": (Endpoint("192.0.2.1", 8081), 5, False),
            "web2": (Endpoint("192.0.2.2", 8082), 1, False),
            "web3": (Endpoint("192.0.2.3", 8083), 1, True),
        }
        assert view.server("web1").server.meta["srv_priority"] == 10
        # a target whose address is not in the additional section is resolved separately
        auth.records[("_http._tcp.example.test.", "SRV")] = (1, ["10 5 8081 a.example.test.",
                                                                 "10 5 9000 d.other.test."])
        auth.records[("d.other.test.", "A")] = (60, ["192.0.2.4"])
        await until(lambda: set(servers(state).values()) == {"192.0.2.1:8081", "192.0.2.4:9000"})
        assert servers(state)["web1"] == "192.0.2.1:8081"
        await mgr.stop()
        auth.close()

    asyncio.run(main())


def test_nxdomain_is_held_and_failures_keep_the_set(caplog):
    caplog.set_level(logging.WARNING, logger="herder.discovery")

    async def main():
        auth = await AuthServer().start()
        auth.records[("api.example.test.", "A")] = (1, ["192.0.2.1"])
        state, mgr = make(auth.port, "api.example.test",
                          'port = 80\nttl_min = "50ms"\nttl_max = "100ms"\nhold_nx = "600ms"')
        await mgr.start()
        assert servers(state) == {"srv1": "192.0.2.1:80"}

        # the server stops answering: the set stays, one warning
        auth.silent = True
        await until(lambda: any("resolution failed" in r.message for r in caplog.records))
        await asyncio.sleep(0.5)
        assert servers(state) == {"srv1": "192.0.2.1:80"}
        assert sum("resolution failed" in r.message for r in caplog.records) == 1
        auth.silent = False

        # the name goes away: kept for hold_nx, then removed
        loop = asyncio.get_running_loop()
        del auth.records[("api.example.test.", "A")]
        await until(lambda: any("NXDOMAIN; keeping the last 1 server(s)" in r.message for r in caplog.records))
        t0 = loop.time()
        assert servers(state) == {"srv1": "192.0.2.1:80"}
        await until(lambda: servers(state) == {})
        held = loop.time() - t0
        # and it comes back
        auth.records[("api.example.test.", "A")] = (1, ["192.0.2.9"])
        await until(lambda: servers(state) == {"srv1": "192.0.2.9:80"})
        await mgr.stop()
        auth.close()
        return held

    held = asyncio.run(main())
    assert held >= 0.4  # hold_nx 600 ms, measured from after the first NXDOMAIN was logged


def test_resolver_unreachable_at_start_does_not_block_start():
    async def main():
        auth = await AuthServer().start()
        auth.silent = True
        state, mgr = make(auth.port, "api.example.test", 'port = 80\nttl_min = "50ms"')
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await mgr.start()
        assert loop.time() - t0 < 5.0
        assert servers(state) == {}
        auth.silent = False
        auth.records[("api.example.test.", "A")] = (1, ["192.0.2.1"])
        await until(lambda: servers(state) == {"srv1": "192.0.2.1:80"})
        await mgr.stop()
        auth.close()

    asyncio.run(main())
