"""VRRP on the wire: raw protocol-112 sockets, and the asyncio driver of one state machine.

Theory of operation
-------------------
* :class:`VrrpSocket` is one socket per (interface, address family), as keepalived's
  socket pool: every instance on that interface and family shares it, and received
  packets are demultiplexed by VRID (and, for instances sharing a VRID over unicast, by
  peer). It joins 224.0.0.18 / ff02::12 on the interface when an instance uses multicast,
  is bound to the interface (``SO_BINDTODEVICE``), and reads the TTL (IPv4: from the IP
  header the raw socket delivers; IPv6: ``IPV6_HOPLIMIT`` ancillary data) and the
  destination (IPv6: ``IPV6_PKTINFO``) so the machine can check them (RFC 5798 7.1).
  IPv4 adverts are sent through an ``IPPROTO_RAW`` socket with an IP header built by
  :func:`herder.ha.vrrp.packet.build_ipv4` (TTL 255, TOS 0xc0, source = the primary
  address), as keepalived sends them; a raw IPv4 socket bound to a unicast source would
  stop receiving multicast, and ``IPPROTO_RAW`` never receives. IPv6 adverts go out with
  ``sendmsg`` and ``IPV6_PKTINFO`` naming the link-local source; herder computes the
  checksum itself (the kernel would only do it with ``IPV6_CHECKSUM``, and then would
  drop bad ones silently, uncounted).
* :class:`InstanceDriver` is aioquic's ``QuicConnectionProtocol`` for VRRP: it feeds the
  machine (packets, timer expiries, tracking changes) with ``now`` from
  ``time.monotonic()``, then performs every action of
  :meth:`~herder.ha.vrrp.machine.VrrpMachine.next_action` at once, in order, and re-arms
  **one** timer from :meth:`~herder.ha.vrrp.machine.VrrpMachine.get_timer`. The actions
  are quick and synchronous (a raw send, a netlink request handled inside ``send()``, a
  raw frame), so a new master's advert, VIPs and first gratuitous ARPs leave within a
  fraction of a millisecond of its timer; only repeated announcements with a pause
  between them (``garp_interval``) become a task, cancelled when the VIPs go. Notify
  scripts are handed to :mod:`herder.ha.vrrp.notify`, which runs them in order.
  Every transition is logged when it happens, with its cause (``(VI_1) Entering MASTER
  STATE (was BACKUP, priority 100): master down: no advert from 198.18.0.3 for 3.609s``).
* Timer precision. The event loop's timers are coarse (uvloop's have millisecond
  granularity and fire up to about a millisecond late, measured); keepalived's are
  microsecond timers. The master-down timer decides how fast a failover is, so the
  driver arms it :data:`TIMER_LEAD_S` early and sleeps the last fraction of a millisecond
  precisely (blocking the loop for at most twice that, only when a backup's master-down
  timer expires, which is when it becomes master). Other timers (adverts, GARP sets) fire
  when the loop fires them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from herder.ha.vrrp.actions import ActionBackend
from herder.ha.vrrp.machine import (
    AddVips,
    DelVips,
    Notify,
    SendAdvert,
    SendGratuitousArp,
    SendNeighborAdvert,
    State,
    VrrpMachine,
)
from herder.ha.vrrp.packet import (
    IPPROTO_VRRP,
    MCAST_V4,
    MCAST_V6,
    TTL,
    Advert,
    MalformedPacket,
    build_ipv4,
    parse_ipv4,
)

__all__ = ["InstanceDriver", "VrrpSocket"]

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
#: handler(payload, src, dst, ttl, now)
Handler = Callable[[bytes, IPAddress, IPAddress | None, int | None, float], None]

#: Packets read per wake-up at most (the rest wait for the next loop iteration).
READ_BURST = 64
#: The master-down timer is armed this much early and its last stretch slept precisely.
TIMER_LEAD_S = 0.0015
_IP_MREQN = "4s4si"


class VrrpSocket:
    """One raw VRRP socket on one interface for one family; see the module docstring."""

    def __init__(self, ifname: str, ifindex: int, family: int) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.family = family
        self._rx: socket.socket | None = None
        self._tx: socket.socket | None = None
        self._handlers: dict[int, list[tuple[frozenset[IPAddress], Handler]]] = {}
        self._joined = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = {"received": 0, "sent": 0, "unknown_vrid": 0, "malformed": 0, "send_errors": 0}

    @property
    def group(self) -> IPAddress:
        return MCAST_V4 if self.family == 4 else MCAST_V6

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the sockets and start reading (call once, from the loop's thread)."""
        dev = self.ifname.encode()
        if self.family == 4:
            rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev)
            tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            tx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                          struct.pack(_IP_MREQN, b"\0" * 4, b"\0" * 4, self.ifindex))
            tx.setblocking(False)
            self._tx = tx
        else:
            rx = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_VRRP)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, TTL)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0xC0)
        rx.setblocking(False)
        self._rx = rx
        self._loop = loop
        loop.add_reader(rx.fileno(), self._on_readable)

    def join(self) -> None:
        """Join the VRRP group on the interface (once; for multicast instances)."""
        if self._joined or self._rx is None:
            return
        if self.family == 4:
            mreq = struct.pack(_IP_MREQN, MCAST_V4.packed, b"\0" * 4, self.ifindex)
            self._rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            mreq = MCAST_V6.packed + struct.pack("@I", self.ifindex)
            self._rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        self._joined = True

    def register(self, vrid: int, handler: Handler, peers: frozenset[IPAddress] = frozenset()) -> None:
        """Deliver packets for ``vrid`` to ``handler`` (from ``peers`` when several share it)."""
        self._handlers.setdefault(vrid, []).append((peers, handler))

    def unregister(self, handler: Handler) -> None:
        for vrid in list(self._handlers):
            self._handlers[vrid] = [(p, h) for p, h in self._handlers[vrid] if h is not handler]
            if not self._handlers[vrid]:
                del self._handlers[vrid]

    @property
    def empty(self) -> bool:
        return not self._handlers

    def send(self, payload: bytes, src: IPAddress, dst: IPAddress) -> bool:
        """Send one VRRP message; False (logged, counted) if the kernel refused it."""
        try:
            if self.family == 4:
                assert self._tx is not None
                self._tx.sendto(build_ipv4(src, dst, payload), (str(dst), 0))  # type: ignore[arg-type]
            else:
                assert self._rx is not None
                info = src.packed + struct.pack("@I", self.ifindex)
                self._rx.sendmsg([payload], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)],
                                  0, (str(dst), 0, 0, self.ifindex))
        except OSError as e:
            self.stats["send_errors"] += 1
            log.warning("cannot send VRRP advert on %s to %s: %s", self.ifname, dst, e.strerror or e)
            return False
        self.stats["sent"] += 1
        return True

    def _on_readable(self) -> None:
        assert self._rx is not None and self._loop is not None
        for _ in range(READ_BURST):
            try:
                if self.family == 4:
                    data = self._rx.recv(4096)
                    anc: list[Any] = []
                    addr: Any = None
                else:
                    data, anc, _flags, addr = self._rx.recvmsg(4096, socket.CMSG_SPACE(64))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("VRRP socket on %s: %s", self.ifname, e.strerror or e)
                return
            self.stats["received"] += 1
            self._dispatch(data, anc, addr, time.monotonic())

    def _dispatch(self, data: bytes, anc: list[Any], addr: Any, now: float) -> None:
        ttl: int | None
        dst: IPAddress | None
        if self.family == 4:
            try:
                ip = parse_ipv4(data)
            except MalformedPacket as e:
                self.stats["malformed"] += 1
                log.debug("VRRP socket on %s: %s", self.ifname, e)
                return
            src: IPAddress = ip.src
            dst, ttl, payload = ip.dst, ip.ttl, ip.payload
        else:
            src = ip_address(str(addr[0]).split("%", 1)[0])
            ttl = dst = None
            for level, kind, value in anc:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                    ttl = struct.unpack("@i", value[:4])[0]
                elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(value) >= 16:
                    dst = IPv6Address(value[:16])
            payload = data
        vrid = payload[1] if len(payload) > 1 else None
        handlers = self._handlers.get(vrid) if vrid is not None else None
        if not handlers:
            self.stats["unknown_vrid"] += 1
            return
        handler = handlers[0][1]
        if len(handlers) > 1:
            handler = next((h for peers, h in handlers if src in peers), handler)
        handler(payload, src, dst, ttl, now)

    def close(self) -> None:
        if self._rx is not None and self._loop is not None:
            self._loop.remove_reader(self._rx.fileno())
        for s in (self._rx, self._tx):
            if s is not None:
                s.close()
        self._rx = self._tx = None

    def status(self) -> dict[str, Any]:
        return {"interface": self.ifname, "family": f"IPv{self.family}", "joined": self._joined,
                "vrids": sorted(self._handlers), **self.stats}


class InstanceDriver:
    """Runs one :class:`VrrpMachine` on the event loop; see the module docstring.

    Args:
        machine: the state machine (not started).
        sock: the socket of the instance's interface and family.
        backend: performs VIP changes and announcements (synchronously).
        peers: unicast peers (empty: multicast to the group).
        on_transition: called (soon, on the loop) with every :class:`Notify`, for the
            sync group.
        notify: called at once with every :class:`Notify` (queues the notify scripts).
    """

    def __init__(self, machine: VrrpMachine, sock: VrrpSocket, backend: ActionBackend, *,
                 peers: tuple[IPAddress, ...] = (),
                 on_transition: Callable[[InstanceDriver, Notify], None] | None = None,
                 notify: Callable[[Notify], None] | None = None) -> None:
        self.machine = machine
        self.sock = sock
        self.backend = backend
        self.peers = peers
        self.on_transition = on_transition
        self.notify = notify
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._repeats: set[asyncio.Task] = set()
        #: Wall-clock time of every transition: (time.time(), Notify), newest last (bounded).
        self.history: list[tuple[float, Notify]] = []

    @property
    def name(self) -> str:
        return self.machine.name

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    # ------------------------------------------------------------------ inputs

    def start(self) -> None:
        """Register with the socket and start the machine (INITIALIZE -> BACKUP, usually)."""
        self._loop = asyncio.get_running_loop()
        self.sock.register(self.machine.config.vrid, self.receive, frozenset(self.peers))
        if not self.peers:
            self.sock.join()
        self.machine.start(self._now())
        self._pump()

    def receive(self, payload: bytes, src: IPAddress, dst: IPAddress | None, ttl: int | None, now: float) -> None:
        self.machine.receive_advert(payload, src, now, ttl=ttl, dst=dst)
        self._pump()

    def set_tracking(self, adjust: int, faults: tuple[str, ...]) -> None:
        self.machine.set_tracking(self._now(), adjust=adjust, faults=faults)
        self._pump()

    def promote(self, cause: str) -> None:
        self.machine.promote(self._now(), cause)
        self._pump()

    def demote(self, cause: str) -> None:
        self.machine.demote(self._now(), cause)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        when = self.machine.get_timer()
        if when is not None and when == self.machine.down_timer:
            remaining = when - self._now()
            if 0 < remaining <= 2 * TIMER_LEAD_S:
                time.sleep(remaining)  # the bounded precise wait of the module docstring
        self.machine.handle_timer(self._now())
        self._pump()

    async def stop(self, timeout: float = 1.0) -> None:
        """Shutdown: a master sends priority 0 and removes its VIPs."""
        if self._loop is None:
            return
        self.machine.shutdown(self._now())
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._cancel_repeats()
        self.sock.unregister(self.receive)

    # ------------------------------------------------------------------ outputs

    def _pump(self) -> None:
        m = self.machine
        while (action := m.next_action()) is not None:
            try:
                self._perform(action)
            except Exception:  # one failed action must not stop the machine
                log.exception("(%s) action %s failed", self.name, type(action).__name__)
        when = m.get_timer()
        if when != self._timer_at or (when is not None and self._timer is None):
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = when
            if when is not None:
                assert self._loop is not None
                lead = TIMER_LEAD_S if when == m.down_timer else 0.0
                self._timer = self._loop.call_later(max(0.0, when - self._now() - lead), self._on_timer)

    def _perform(self, action: Any) -> None:
        if isinstance(action, SendAdvert):
            self._send(action.advert)
        elif isinstance(action, AddVips):
            self.backend.add_vips(action.addresses)
            log.info("(%s) VIPs set: %s", self.name, ", ".join(map(str, action.addresses)))
        elif isinstance(action, DelVips):
            self._cancel_repeats()
            self.backend.del_vips(action.addresses)
            if self.machine.stats.became_master:
                log.info("(%s) VIPs removed: %s", self.name, ", ".join(map(str, action.addresses)))
        elif isinstance(action, (SendGratuitousArp, SendNeighborAdvert)):
            self._announce(action)
        elif isinstance(action, Notify):
            self._log_transition(action)
            if self.on_transition is not None:
                assert self._loop is not None
                self._loop.call_soon(self.on_transition, self, action)
            if self.notify is not None:
                self.notify(action)

    def _announce(self, action: SendGratuitousArp | SendNeighborAdvert) -> None:
        what = "gratuitous ARP(s)" if isinstance(action, SendGratuitousArp) else "unsolicited neighbour advert(s)"
        count = max(1, action.count)
        if action.interval_s <= 0:
            for _ in range(count):
                self.backend.announce(action.addresses)
        else:
            self.backend.announce(action.addresses)
            if count > 1:
                assert self._loop is not None
                task = self._loop.create_task(self._repeat(action.addresses, count - 1, action.interval_s))
                self._repeats.add(task)
                task.add_done_callback(self._repeats.discard)
        log.info("(%s) sent %d %s for %s (%s)", self.name, count, what, ", ".join(map(str, action.addresses)),
                 action.reason)

    async def _repeat(self, addresses: tuple[IPAddress, ...], count: int, interval_s: float) -> None:
        for _ in range(count):
            await asyncio.sleep(interval_s)
            self.backend.announce(addresses)

    def _cancel_repeats(self) -> None:
        for t in list(self._repeats):
            t.cancel()
        self._repeats.clear()

    def _send(self, advert: Advert) -> None:
        src = self.machine.primary
        for dst in self.peers or (self.sock.group,):
            self.sock.send(advert.encode(src, dst), src, dst)

    def _log_transition(self, n: Notify) -> None:
        self.history.append((time.time(), n))
        del self.history[:-50]
        if n.new is State.INITIALIZE:
            log.info("(%s) Stopped (was %s): %s", n.instance, n.old.value, n.cause)
        else:
            log.info("(%s) Entering %s STATE (was %s, priority %d): %s", n.instance, n.new.value, n.old.value,
                     n.priority, n.cause)

    def status(self) -> dict[str, Any]:
        out = self.machine.status()
        out["transitions"] = [
            {"at": round(t, 3), "from": n.old.value, "to": n.new.value, "cause": n.cause}
            for t, n in self.history[-10:]
        ]
        return out
