"""The userspace L4 relay: the same virtual services, served by an asyncio TCP/UDP full proxy.

Theory of operation
-------------------
For users without root or without nftables, :class:`Relay` listens on each virtual
service's address itself and relays every TCP connection (and every UDP client's
datagrams) to a real server. It is a *full proxy*: the real server sees the relay as
the client, and the replies come back through it, so no forwarding method applies.

The choice of server comes from the very :class:`~herder.l4.ruleset.Ruleset` the kernel
path programs (:func:`herder.l4.plan.plan` over each pool snapshot): the same
destinations, weights, quiescing and scheduling tables. ``rr``/``wrr`` walk the table
with a counter; ``sh``/``dh``/``mh`` index it with a hash of the client address (and
port with ``hash_key = "flow"``; the destination address for ``dh``); persistence keeps
a client (grouped by the netmask) on its destination for the timeout while that
destination is alive. Python's hash is not the kernel's jhash, so a given client may land
on a different server than on the kernel path; the shares and the properties are the
same.

The data path is two :class:`asyncio.Protocol` objects per connection writing into
each other's transports; each side's ``pause_writing`` pauses the other side's reading
(uvicorn's flow control), half-closes are passed on. With ``splice``, an established
TCP connection's sockets are handed to two threads that move bytes with ``os.splice``
through pipes (zero copy); that costs a thread pair per connection, so it is an option
for bulk streams, not the default (see docs/l4.md for measurements).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterable
from typing import Any

from herder.l4.config import L4Settings
from herder.l4.plan import plan
from herder.l4.ruleset import Dest, Ruleset, Scheduler, VirtualService, VirtualServiceSpec
from herder.pool.state import PoolState, Snapshot

__all__ = ["Relay", "ServicePicker"]

log = logging.getLogger(__name__)

HIGH_WATER = 256 * 1024
CONNECT_TIMEOUT_S = 5.0
UDP_IDLE_S = 300.0
SPLICE_CHUNK = 1 << 20


class ServicePicker:
    """Chooses destinations for one virtual service from its planned tables."""

    def __init__(self, svc: VirtualService, previous: ServicePicker | None = None) -> None:
        self.svc = svc
        self.spec = svc.spec
        self.by_id: dict[int, Dest] = {d.id: d for d in svc.dests}
        self.table = svc.table
        self.cursor = previous.cursor if previous is not None else 0
        self.persist: dict[int, tuple[int, float]] = previous.persist if previous is not None else {}
        self._mask = int(ipaddress.IPv4Address(self.spec.netmask))

    @property
    def needs_client(self) -> bool:
        """True when a pick depends on the client (hashing, persistence)."""
        return bool(self.spec.persistence_s) or self.spec.scheduler not in (Scheduler.RR, Scheduler.WRR)

    def next(self) -> Dest | None:
        """The next destination of rr/wrr (no persistence)."""
        table = self.table
        if not table:
            return None
        ident = table[self.cursor % len(table)]
        self.cursor += 1
        return self.by_id[ident]

    def _hash_slot(self, client: tuple[str, int]) -> int:
        s = self.spec
        if s.scheduler is Scheduler.DH or s.hash_key == "destination":
            key = s.vip.encode()
        elif s.hash_key == "flow":
            key = f"{client[0]}:{client[1]}".encode()
        else:
            key = client[0].encode()
        return zlib.crc32(key) % len(self.table)

    def pick(self, client: tuple[str, int], now: float) -> Dest | None:
        """The destination of a new connection from ``client`` (None: nothing usable)."""
        s = self.spec
        pkey = 0
        if s.persistence_s:
            try:
                pkey = int(ipaddress.IPv4Address(client[0])) & self._mask
            except ValueError:
                pkey = 0
            held = self.persist.get(pkey)
            if held is not None and held[1] > now and held[0] in self.svc.alive and held[0] in self.by_id:
                self.persist[pkey] = (held[0], now + s.persistence_s)
                return self.by_id[held[0]]
        if not self.table:
            return None
        if s.scheduler in (Scheduler.RR, Scheduler.WRR):
            ident = self.table[self.cursor % len(self.table)]
            self.cursor += 1
        else:
            ident = self.table[self._hash_slot(client)]
        if s.persistence_s:
            self.persist[pkey] = (ident, now + s.persistence_s)
            if len(self.persist) > 65536:
                self.persist = {k: v for k, v in self.persist.items() if v[1] > now}
        return self.by_id[ident]


# --------------------------------------------------------------------------- TCP


class _Side(asyncio.Protocol):
    """One end of a relayed TCP connection; ``peer`` is the other end."""

    __slots__ = ("relay", "transport", "peer", "eof", "closed", "buffer", "service")

    def __init__(self, relay: Relay, service: _TcpService | None) -> None:
        self.relay = relay
        self.service = service
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False
        self.closed = False
        self.buffer: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.buffer.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            if peer.eof:
                peer.transport.close()
                self.transport.close()  # type: ignore[union-attr]
                return False
            try:
                peer.transport.write_eof()
            except (OSError, RuntimeError):
                peer.transport.close()
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.close()
        self.relay.connections.discard(self)


class _Client(_Side):
    """The client's side: picks a destination and opens the upstream connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's transports are not asyncio.Transport)
        relay = self.relay
        relay.connections.add(self)
        transport.pause_reading()
        svc = self.service
        picker = svc.picker  # type: ignore[union-attr]
        if picker is None:
            transport.abort()
            return
        # the hot path of rr/wrr needs neither the client's address nor the clock
        if picker.needs_client:
            dest = picker.pick(transport.get_extra_info("peername") or ("0.0.0.0", 0), time.monotonic())
        else:
            dest = picker.next()
        if dest is None:
            transport.abort()
            return
        relay.loop.create_task(self._connect(dest))

    async def _connect(self, dest: Dest) -> None:
        relay = self.relay
        up = _Side(relay, None)
        up.peer = self
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):  # cheaper than wait_for: no extra task
                await relay.loop.create_connection(lambda: up, dest.address, dest.port)
        except (OSError, TimeoutError) as e:
            log.debug("l4 relay: %s: cannot connect to %s: %s", self.service.spec.key, dest.endpoint, e)  # type: ignore[union-attr]
            if self.transport is not None:
                self.transport.abort()
            return
        if self.closed:
            up.transport.close()  # type: ignore[union-attr]
            return
        relay.connections.add(up)
        self.peer = up
        assert up.transport is not None and self.transport is not None
        if self.buffer:
            # uvloop may deliver data read before pause_reading() took effect
            up.transport.write(b"".join(self.buffer))
            self.buffer.clear()
        if self.eof:
            up.transport.write_eof()
        if relay.splice and _splice_ok and not self.eof:
            relay.hand_to_splice(self, up)
            return
        self.transport.resume_reading()


class _TcpService:
    def __init__(self, spec: VirtualServiceSpec) -> None:
        self.spec = spec
        self.picker: ServicePicker | None = None
        self.server: asyncio.AbstractServer | None = None


# --------------------------------------------------------------------------- UDP


class _UdpUpstream(asyncio.DatagramProtocol):
    def __init__(self, service: _UdpService, client: tuple[str, int]) -> None:
        self.service = service
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.last = time.monotonic()
        if self.service.transport is not None:
            self.service.transport.sendto(data, self.client)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.sessions.pop(self.client, None)


class _UdpService(asyncio.DatagramProtocol):
    """A UDP virtual service: one upstream socket per client address (a session)."""

    def __init__(self, spec: VirtualServiceSpec, relay: Relay) -> None:
        self.spec = spec
        self.relay = relay
        self.picker: ServicePicker | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple[str, int], _UdpUpstream] = {}
        self.pending: dict[tuple[str, int], list[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        sess = self.sessions.get(addr)
        if sess is not None and sess.transport is not None:
            sess.last = time.monotonic()
            sess.transport.sendto(data)
            return
        if addr in self.pending:
            self.pending[addr].append(data)
            return
        dest = self.picker.pick(addr, time.monotonic()) if self.picker else None
        if dest is None:
            return
        self.pending[addr] = [data]
        self.relay.loop.create_task(self._open(addr, dest))

    async def _open(self, addr: tuple[str, int], dest: Dest) -> None:
        up = _UdpUpstream(self, addr)
        try:
            await self.relay.loop.create_datagram_endpoint(lambda: up, remote_addr=(dest.address, dest.port))
        except OSError as e:
            log.debug("l4 relay: %s: cannot open UDP to %s: %s", self.spec.key, dest.endpoint, e)
            self.pending.pop(addr, None)
            return
        self.sessions[addr] = up
        for d in self.pending.pop(addr, ()):
            up.transport.sendto(d)  # type: ignore[union-attr]

    def expire(self, now: float) -> None:
        for sess in list(self.sessions.values()):
            if now - sess.last > UDP_IDLE_S and sess.transport is not None:
                sess.transport.close()


# --------------------------------------------------------------------------- splice

_splice_ok = hasattr(os, "splice")


def _pump(src: socket.socket, dst: socket.socket, done: threading.Event) -> None:
    """Move bytes src -> dst with splice through a pipe until EOF; then half-close dst."""
    r, w = os.pipe()
    try:
        while True:
            n = os.splice(src.fileno(), w, SPLICE_CHUNK)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dst.fileno(), n)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    finally:
        os.close(r)
        os.close(w)
        done.set()


# --------------------------------------------------------------------------- component


class Relay:
    """The ``l4`` component on the userspace path (see the module docstring).

    Args:
        specs: the virtual services (their VIPs must be addresses of this host).
        pool_state: the pool state to follow.
        settings: the ``[l4]`` section (table name and seed are unused here).
        splice: hand established TCP connections to splice threads.
    """

    def __init__(self, specs: Iterable[VirtualServiceSpec], pool_state: PoolState,
                 settings: L4Settings | None = None, *, splice: bool = False) -> None:
        self.specs = list(specs)
        self.pool_state = pool_state
        self.settings = settings or L4Settings()
        self.splice = splice
        self.name = f"l4 relay ({len(self.specs)} virtual service(s))"
        self.ruleset: Ruleset | None = None
        self.tcp: dict[str, _TcpService] = {}
        self.udp: dict[str, _UdpService] = {}
        self.connections: set[_Side] = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._sub = None
        self._reaper: asyncio.Task | None = None
        self._threads: set[threading.Thread] = set()

    @property
    def ports(self) -> dict[str, int]:
        """Bound port of each service key (for listeners that asked for port 0 in tests)."""
        out = {}
        for k, t in self.tcp.items():
            if t.server is not None and t.server.sockets:
                out[k] = t.server.sockets[0].getsockname()[1]
        for k, u in self.udp.items():
            if u.transport is not None:
                out[k] = u.transport.get_extra_info("sockname")[1]
        return out

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.on_snapshot(self.pool_state.snapshot)
        try:
            for spec in self.specs:
                if spec.proto == "tcp":
                    svc = self.tcp[spec.key] = _TcpService(spec)
                    svc.picker = self._picker(spec.key, None)
                    svc.server = await self.loop.create_server(lambda svc=svc: _Client(self, svc), spec.vip,
                                                               spec.port, reuse_address=True, backlog=4096)
                else:
                    u = self.udp[spec.key] = _UdpService(spec, self)
                    u.picker = self._picker(spec.key, None)
                    await self.loop.create_datagram_endpoint(lambda u=u: u, local_addr=(spec.vip, spec.port))
                log.info("l4 relay: %s listening (%s, %s)", spec.key, spec.scheduler.value, spec.pool)
        except OSError:
            await self.stop()
            raise
        self._sub = self.pool_state.subscribe(self.on_snapshot, name="l4 relay", replay=False)
        self._reaper = self.loop.create_task(self._reap())

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for t in self.tcp.values():
            if t.server is not None:
                t.server.close()
        for u in self.udp.values():
            for sess in list(u.sessions.values()):
                if sess.transport is not None:
                    sess.transport.close()
            if u.transport is not None:
                u.transport.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.abort()
        for t in self.tcp.values():
            if t.server is not None:
                await t.server.wait_closed()
        for th in list(self._threads):
            th.join(timeout=1.0)

    def _picker(self, key: str, previous: ServicePicker | None) -> ServicePicker | None:
        svc = self.ruleset.service(key) if self.ruleset else None
        return ServicePicker(svc, previous) if svc is not None else None

    def on_snapshot(self, snap: Snapshot) -> None:
        s = self.settings
        self.ruleset = plan(snap, self.specs, previous=self.ruleset, table=s.table, seed=s.seed)
        for k, t in list(self.tcp.items()) + list(self.udp.items()):
            t.picker = self._picker(k, t.picker)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(10.0)
            now = time.monotonic()
            for u in self.udp.values():
                u.expire(now)
            self._threads = {t for t in self._threads if t.is_alive()}

    def hand_to_splice(self, client: _Side, up: _Side) -> None:
        """Move an established connection's bytes with os.splice in two threads."""
        socks = []
        for side in (client, up):
            sock = side.transport.get_extra_info("socket")  # type: ignore[union-attr]
            socks.append(socket.socket(fileno=os.dup(sock.fileno())))
        for side in (client, up):
            side.peer = None
            side.transport.pause_reading()  # type: ignore[union-attr]
            side.transport.abort()  # type: ignore[union-attr]
        for s in socks:
            s.setblocking(True)
        done = [threading.Event(), threading.Event()]

        def run() -> None:
            t = threading.Thread(target=_pump, args=(socks[1], socks[0], done[1]), daemon=True)
            t.start()
            _pump(socks[0], socks[1], done[0])
            t.join()
            for s in socks:
                s.close()

        th = threading.Thread(target=run, name="l4-splice", daemon=True)
        self._threads.add(th)
        th.start()
