"""The userspace relay: the same L4 service definitions, served on 127.0.0.1 without nftables.

herder runs in process with ``[l4] backend = "userspace"`` (what ``auto`` picks without
root); the real servers are asyncio servers on 127.0.0.1 that answer with their name.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import pytest

from herder.config.load import load_strings
from herder.runtime import Runtime

pytestmark = pytest.mark.integration


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def tcp_backend(name: str, port: int) -> asyncio.AbstractServer:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while line := await r.readline():
                w.write(name.encode() + b" " + line)
                await w.drain()
        finally:
            w.close()

    return await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name.encode()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(self.name + b" " + data, addr)


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future) -> None:
        self.fut = fut

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.fut.done():
            self.fut.set_result(data)


async def ask(port: int, line: bytes = b"hi\n") -> str:
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    try:
        w.write(line)
        await w.drain()
        return (await asyncio.wait_for(r.readline(), 2)).decode().split(" ", 1)[0]
    finally:
        w.close()


CONFIG = """\
[l4]
backend = "userspace"

[services.www]
mode = "tcp"
listen = "127.0.0.1:{vport}"
pool = "www"
forward = "nat"
scheduler = "wrr"

[services.sticky]
mode = "tcp"
listen = "127.0.0.1:{sport}"
pool = "www"
scheduler = "rr"
persistence_timeout = "60s"

[services.dns]
mode = "udp"
listen = "127.0.0.1:{uport}"
pool = "udp"
scheduler = "rr"

[pools.www]
initial_state = "up"
[[pools.www.servers]]
name = "a"
address = "127.0.0.1:{a}"
weight = 1
[[pools.www.servers]]
name = "b"
address = "127.0.0.1:{b}"
weight = 2
[[pools.www.checks]]
type = "tcp"
inter = "100ms"
rise = 1
fall = 1

[pools.udp]
[[pools.udp.servers]]
name = "u1"
address = "127.0.0.1:{u1}"
[[pools.udp.servers]]
name = "u2"
address = "127.0.0.1:{u2}"
"""


async def wait_until(cond, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def test_relay_serves_the_l4_services_on_loopback():
    ports = {k: free_port() for k in ("vport", "sport", "a", "b")}
    ports.update({k: free_port(socket.SOCK_DGRAM) for k in ("uport", "u1", "u2")})
    cfg = load_strings([("l4.toml", CONFIG.format(**ports))])

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        a = await tcp_backend("a", ports["a"])
        b = await tcp_backend("b", ports["b"])
        udp = [await loop.create_datagram_endpoint(lambda n=n: UdpEcho(n), local_addr=("127.0.0.1", ports[n]))
               for n in ("u1", "u2")]
        rt = Runtime(cfg)
        await rt.start()
        try:
            assert any(c.name.startswith("l4 relay") for c in rt.components)
            got = Counter([await ask(ports["vport"]) for _ in range(90)])
            assert got == {"a": 30, "b": 60}, got
            # persistence: one client address, one server, whatever rr would say
            assert len({await ask(ports["sport"]) for _ in range(10)}) == 1
            # a long stream passes both ways, with half-close
            r, w = await asyncio.open_connection("127.0.0.1", ports["vport"])
            payload = b"x" * 60_000 + b"\n"  # under the test backend's 64 KiB line limit
            w.write(payload)
            await w.drain()
            echoed = await asyncio.wait_for(r.readline(), 5)
            assert echoed.endswith(payload) and len(echoed) == len(payload) + 2
            w.close()
            # UDP: each client address is a session on one server; two clients are spread
            answers = []
            for _ in range(2):
                fut = loop.create_future()
                tr, _ = await loop.create_datagram_endpoint(lambda fut=fut: _Answer(fut),
                                                            remote_addr=("127.0.0.1", ports["uport"]))
                tr.sendto(b"q")
                answers.append((await asyncio.wait_for(fut, 2)).split()[0].decode())
                tr.close()
            assert sorted(answers) == ["u1", "u2"]
            # b stops: its check fails and the relay sends everything to a
            b.close()
            await b.wait_closed()
            await wait_until(lambda: rt.pool_state.snapshot.pool("www").server("b").effective_weight == 0)
            assert {await ask(ports["vport"]) for _ in range(10)} == {"a"}
            # b is back: so is its share
            b = await tcp_backend("b", ports["b"])
            await wait_until(lambda: rt.pool_state.snapshot.pool("www").server("b").effective_weight == 2)
            assert Counter([await ask(ports["vport"]) for _ in range(30)]) == {"a": 10, "b": 20}
        finally:
            await rt.stop()
            a.close()
            b.close()
            for tr, _ in udp:
                tr.close()

    asyncio.run(scenario())


def test_relay_refuses_when_nothing_is_usable():
    ports = {k: free_port() for k in ("vport", "sport", "a", "b")}
    ports.update({k: free_port(socket.SOCK_DGRAM) for k in ("uport", "u1", "u2")})
    cfg = load_strings([("l4.toml", CONFIG.format(**ports))])

    async def scenario() -> None:
        rt = Runtime(cfg)
        await rt.start()
        try:
            # no backend listens: the checks take both down; a client is closed at once
            await wait_until(lambda: not rt.pool_state.snapshot.pool("www").usable())
            r, w = await asyncio.open_connection("127.0.0.1", ports["vport"])
            assert await asyncio.wait_for(r.read(), 2) == b""
            w.close()
        finally:
            await rt.stop()

    asyncio.run(scenario())
