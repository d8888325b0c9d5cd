"""The DNS server component: UDP and TCP transports around the answer function.

Theory of operation
-------------------
:class:`DnsEngine` turns query bytes into response bytes: it decodes with
:func:`~herder.dns.wire.parse_query`, asks :func:`~herder.dns.answer.answer_set` for every
possible response, encodes them and picks one. It holds the current
:class:`~herder.dns.answer.View`, rebuilt on every pool-state snapshot (a server going
down, a weight changing) by the subscription the component takes at start.

The hot path is a dictionary lookup. Encoded responses (without their 2-octet ID) are
cached under the query's own octets after the ID -- name as spelled, type, flags, EDNS
payload size, ECS option -- which is the (name, type, region, ...) key the answer depends
on, except for one thing the packet does not carry: its source address. So:

* if the answer does not depend on the client, or the client is given by ECS (which is
  in the key), the entry is stored under ``data[2:]``;
* if it depends on the source address, ``data[2:]`` maps to a marker, and the entry is
  stored under ``(data[2:], client class)``, where the class (region, latency row) of a
  source address is itself cached.

Weighted and rotated answers are cached as all their encoded variants with cumulative
weights; a query costs a random number and a bisect. Every cache is cleared when the view
changes, so an answer never outlives the snapshot it was computed from; they are also
cleared when they reach ``cache_entries`` (random names cannot grow memory without bound).

UDP answers larger than the client's EDNS payload size (512 without EDNS; never more than
our ``udp_payload``) are sent truncated with TC set; the client retries over TCP, where
messages are length-prefixed (RFC 1035 4.2.2, RFC 7766: pipelined queries are answered in
order, idle connections are closed after ``tcp_idle_timeout``).

UDP runs on the event loop (a datagram protocol; ``udp_io = "loop"``, the default) or on
a blocking socket in a thread of its own (``udp_io = "thread"``: no epoll round per
datagram, ~10% more queries per core; the GIL is released in every recvfrom/sendto, so
the loop's other work goes on). The engine is shared; a lock on the rare paths (cache
stores, view swaps) keeps a thread from caching an answer of a view that was replaced.

Malformed queries get FORMERR when they have a header to answer to, are dropped otherwise
(short messages, responses); an unexpected exception answers SERVFAIL and is logged --
the server never stops answering because of one packet.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import socket
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from herder.api.server import Request, add_route
from herder.config.load import register_config_check
from herder.config.native import register_section
from herder.dns.answer import ClientClass, View, answer_set, classify, client_prefix, source_prefix
from herder.dns.config import DNS_SECTION, DnsSettings, check_references, make_view
from herder.dns.geo import RegionMap
from herder.dns.wire import FormErr, Rcode, encode_error, encode_response, name_to_text, parse_query
from herder.pool.model import Endpoint, Region
from herder.pool.state import PoolState, Snapshot, Subscription
from herder.runtime import register_component

if TYPE_CHECKING:
    from herder.runtime import Runtime

__all__ = ["DnsEngine", "DnsServer"]

log = logging.getLogger(__name__)

#: Marker entry: "the answer to these octets depends on the source address".
_BY_SOURCE = object()
_SOCKET_BUFFER = 4 * 1024 * 1024
MAX_TCP_MESSAGE = 65535


class DnsEngine:
    """Query bytes in, response bytes out, with the answer cache. No sockets.

    ``payload`` is our EDNS UDP payload size (the largest UDP response we send and the
    size we advertise). Call :meth:`set_view` with each new view.
    """

    def __init__(self, view: View, *, payload: int = 1232, cache_entries: int = 100_000) -> None:
        self.view = view
        self.payload = payload
        self.cache_entries = cache_entries
        #: query octets after the ID (or (octets, class key)) -> encoded answer tail(s)
        self.cache: dict[object, object] = {}
        self._classes: dict[str, ClientClass] = {}
        self._lock = threading.Lock()
        #: Counters (the cached hot path counts nothing, to stay a dict lookup): UDP queries
        #: answered without the cache, FORMERR replies, dropped messages, SERVFAILs, TCP queries.
        self.stats = {"misses": 0, "formerr": 0, "dropped": 0, "servfail": 0, "tcp": 0}

    def set_view(self, view: View) -> None:
        """Serve ``view`` from now on; every cached answer is dropped.

        Safe against a UDP thread answering concurrently: an answer computed from the
        old view is never stored after the swap (see :meth:`_store`).
        """
        with self._lock:
            self.view = view
            self.cache.clear()
            self._classes.clear()

    # ------------------------------------------------------------------ UDP

    def udp(self, data: bytes, source: str) -> bytes | None:
        """The response datagram for ``data`` from ``source`` (an IP address), or None to
        drop it. Uses the cache; see the module docstring."""
        entry = self.cache.get(data[2:])
        if entry is _BY_SOURCE:
            entry = self.cache.get((data[2:], self._class_of(source).key))
        if entry is not None:
            return data[:2] + _pick(entry)
        return self._miss(data, source)

    def _class_of(self, source: str) -> ClientClass:
        cls = self._classes.get(source)
        if cls is None:
            view = self.view
            cls = classify(view, source_prefix(source))
            with self._lock:
                if self.view is view:
                    if len(self._classes) >= 65536:
                        self._classes.clear()
                    self._classes[source] = cls
        return cls

    def _miss(self, data: bytes, source: str) -> bytes | None:
        self.stats["misses"] += 1
        try:
            q = parse_query(data)
        except FormErr as e:
            if not e.reply:
                self.stats["dropped"] += 1
                return None
            self.stats["formerr"] += 1
            log.debug("FORMERR to %s: %s", source, e.reason)
            return encode_error(e.msg_id, e.flags, Rcode.FORMERR)
        try:
            view = self.view
            prefix, from_ecs = client_prefix(q, source, view)
            cls = classify(view, prefix) if from_ecs else self._class_of(source)
            aset = answer_set(q, cls, view)
            limit = 512 if q.edns is None else min(q.edns.udp_payload, self.payload)
            tails = [encode_response(q, r, max_size=limit, payload=self.payload)[2:] for r in aset.variants]
        except Exception:
            self.stats["servfail"] += 1
            log.exception("answering a query from %s failed; SERVFAIL", source)
            return encode_error(q.msg_id, q.flags, Rcode.SERVFAIL)
        entry = _entry(tails, aset.weights)
        if self.cache_entries:
            self._store(view, data[2:], entry, cls.key if aset.client_dependent and not from_ecs else None)
        return data[:2] + _pick(entry)

    def _store(self, view: View, key: bytes, entry: object, class_key: object) -> None:
        """Cache ``entry`` if ``view`` is still the current view (under the lock, so a
        concurrent :meth:`set_view` cannot be followed by a stale store)."""
        with self._lock:
            if self.view is not view:
                return
            cache = self.cache
            if len(cache) >= self.cache_entries:
                cache.clear()
            if class_key is None:
                cache[key] = entry
            else:
                cache[key] = _BY_SOURCE
                cache[(key, class_key)] = entry

    # ------------------------------------------------------------------ TCP

    def tcp(self, data: bytes, source: str) -> bytes | None:
        """The response message for ``data`` received over TCP (no truncation, no cache)."""
        self.stats["tcp"] += 1
        try:
            q = parse_query(data)
        except FormErr as e:
            if not e.reply:
                self.stats["dropped"] += 1
                return None
            self.stats["formerr"] += 1
            return encode_error(e.msg_id, e.flags, Rcode.FORMERR)
        try:
            view = self.view
            prefix, _ = client_prefix(q, source, view)
            aset = answer_set(q, classify(view, prefix), view)
            resp = aset.pick(_rng)
            return encode_response(q, resp, max_size=MAX_TCP_MESSAGE, payload=self.payload)
        except Exception:
            self.stats["servfail"] += 1
            log.exception("answering a TCP query from %s failed; SERVFAIL", source)
            return encode_error(q.msg_id, q.flags, Rcode.SERVFAIL)


_rng = random.Random()
_random = _rng.random


def _entry(tails: list[bytes], weights: tuple[float, ...]) -> object:
    if len(tails) == 1:
        return tails[0]
    cum = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    return (tuple(tails), tuple(cum), total)


def _pick(entry) -> bytes:
    if type(entry) is bytes:
        return entry
    tails, cum, total = entry
    i = bisect.bisect_right(cum, _random() * total)
    return tails[i if i < len(tails) else -1]


# --------------------------------------------------------------------------- transports


class _UdpProtocol(asyncio.DatagramProtocol):
    """The UDP hot path: one dict lookup per cached query."""

    def __init__(self, engine: DnsEngine) -> None:
        self.engine = engine
        self.cache = engine.cache
        self.transport: asyncio.DatagramTransport | None = None
        self._sendto = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._sendto = transport.sendto

    def datagram_received(self, data: bytes, addr) -> None:
        entry = self.cache.get(data[2:])
        if type(entry) is bytes:
            self._sendto(data[:2] + entry, addr)
            return
        try:
            out = self.engine.udp(data, addr[0])
        except Exception:  # never let one packet stop the listener
            log.exception("UDP query from %s could not be handled", addr[0])
            return
        if out is not None:
            self._sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    """Length-prefixed DNS over TCP (RFC 7766), pipelining allowed, idle timeout."""

    def __init__(self, engine: DnsEngine, idle_timeout: float) -> None:
        self.engine = engine
        self.idle_timeout = idle_timeout
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "?"
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.idle_timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(self.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            n = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + n:
                break
            msg = bytes(buf[2:2 + n])
            del buf[:2 + n]
            try:
                out = self.engine.tcp(msg, self.peer)
            except Exception:
                log.exception("TCP query from %s could not be handled", self.peer)
                out = None
            if out is None:
                # RFC 7766 7: a message we cannot answer ends the connection
                self.transport.close()
                return
            self.transport.write(len(out).to_bytes(2, "big") + out)
        self._arm()

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None


class _UdpThread:
    """The UDP hot path on a blocking socket in a thread of its own (``udp_io = "thread"``).

    Measured ~8% more queries per core than the event loop's datagram protocol (no epoll
    round per datagram); the GIL is released in every recvfrom/sendto, so the event loop
    (TCP, health checks, the API) keeps running. Stopped by a flag plus an empty datagram
    to itself, because a blocking recvfrom cannot be cancelled.
    """

    #: Largest query read; longer datagrams are cut, fail to parse and get FORMERR.
    MAX_QUERY = 4096

    def __init__(self, sock: socket.socket, engine: DnsEngine, name: str) -> None:
        self.sock = sock
        self.engine = engine
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        recv = self.sock.recvfrom
        send = self.sock.sendto
        cache = self.engine.cache
        udp = self.engine.udp
        size = self.MAX_QUERY
        while True:
            try:
                data, addr = recv(size)
            except OSError:
                if self.stopping:
                    return
                continue
            if self.stopping:
                return
            entry = cache.get(data[2:])
            try:
                if type(entry) is bytes:
                    send(data[:2] + entry, addr)
                    continue
                out = udp(data, addr[0])
                if out is not None:
                    send(out, addr)
            except OSError:
                pass  # the client went away (ICMP unreachable): nothing to do
            except Exception:
                log.exception("UDP query from %s could not be handled", addr[0])

    def stop(self, timeout: float = 1.0) -> None:
        self.stopping = True
        host, port = self.sock.getsockname()[:2]
        try:
            with socket.socket(self.sock.family, socket.SOCK_DGRAM) as s:
                s.sendto(b"", (host, port))
        except OSError:
            pass
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("dns UDP thread on %s:%d did not stop within %.1fs", host, port, timeout)
        self.sock.close()


def _udp_socket(ep: Endpoint) -> socket.socket:
    family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
            except OSError:
                pass
        sock.bind((ep.host, ep.port))
    except BaseException:
        sock.close()
        raise
    return sock


class DnsServer:
    """The ``[dns]`` component (also what ``herder dns serve`` runs).

    ``pool_state`` (None for static zones) feeds the view; ``regions`` are herder's
    ``[regions]`` (client prefixes), or ``region_map`` overrides them (a map file).
    ``start`` binds every listener for UDP and TCP and returns once they are bound.
    """

    def __init__(self, settings: DnsSettings, pool_state: PoolState | None = None, *,
                 regions: Mapping[str, Region] | None = None, region_map: RegionMap | None = None,
                 static: bool = False) -> None:
        self.settings = settings
        self.name = "dns " + " ".join(str(e) for e in settings.listen)
        self.pool_state = pool_state
        #: Zones given directly (``herder dns serve``), not from a configuration's [dns].
        self._static = static
        self._fixed_map = region_map
        base = make_view(settings, regions or {})
        if region_map is not None:
            base = View.build(base.zones, base.names, base.maps, region_map=region_map, latency=base.latency,
                              ecs=base.ecs)
        self._base = base
        self._regions_seen: object = None
        self.engine = DnsEngine(base, payload=settings.udp_payload, cache_entries=settings.cache_entries)
        self._sub: Subscription | None = None
        self._udp: list[asyncio.DatagramTransport] = []
        self._threads: list[_UdpThread] = []
        self._tcp: list[asyncio.base_events.Server] = []

    def _on_snapshot(self, snap: Snapshot) -> None:
        region_map = self._fixed_map
        if region_map is None:
            if snap.regions is not self._regions_seen:
                self._regions_seen = snap.regions
                self._base = View.build(self._base.zones, self._base.names, self._base.maps,
                                        region_map=RegionMap.from_regions(snap.regions, self.settings.default_region),
                                        latency=self._base.latency, ecs=self._base.ecs)
            region_map = self._base.region_map
        self.engine.set_view(self._base.with_snapshot(snap, region_map))
        log.debug("dns view now at snapshot version %d", snap.version)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.pool_state is not None:
            self._sub = self.pool_state.subscribe(self._on_snapshot, name="dns")
        try:
            for ep in self.settings.listen:
                sock = _udp_socket(ep)
                if self.settings.udp_io == "thread":
                    th = _UdpThread(sock, self.engine, f"dns-udp {ep}")
                    th.start()
                    self._threads.append(th)
                else:
                    sock.setblocking(False)
                    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self.engine), sock=sock)
                    self._udp.append(transport)
                server = await loop.create_server(
                    lambda: _TcpProtocol(self.engine, self.settings.tcp_idle_timeout), ep.host, ep.port,
                    reuse_address=True, backlog=1024)
                self._tcp.append(server)
        except BaseException:
            await self.stop()
            raise
        view = self.engine.view
        log.info("dns serving %d zone(s), %d policy name(s), %d map(s) on %s (udp %s + tcp, edns payload %d, "
                 "ecs %s)", len(view.zones), len(view.names), len(view.maps),
                 ", ".join(str(e) for e in self.settings.listen), self.settings.udp_io, self.settings.udp_payload,
                 "on" if view.ecs else "off")

    def apply_config(self, config) -> tuple[str, ...]:
        """A reload: serve the new ``[dns]`` section (zones, names, maps, ECS, latency,
        payload, cache size) from now on; the cached answers go. Returns ``("dns",)`` when
        applied, ``()`` when it needs a restart (listeners or ``udp_io`` changed, or the
        section is gone). Zone files were read and checked by the reload already."""
        new = config.section("dns")
        if not isinstance(new, DnsSettings) or self._static:
            return ()
        old = self.settings
        if (new.listen, new.udp_io) != (old.listen, old.udp_io):
            log.warning("dns: listen or udp_io changed: a restart is needed for them (and the rest of [dns])")
            return ()
        base = make_view(new, config.regions)
        if self._fixed_map is not None:
            base = View.build(base.zones, base.names, base.maps, region_map=self._fixed_map, latency=base.latency,
                              ecs=base.ecs)
        self.settings = new
        self._base = base
        self._regions_seen = None
        self.engine.payload = new.udp_payload
        self.engine.cache_entries = new.cache_entries
        if self.pool_state is not None:
            self._on_snapshot(self.pool_state.snapshot)
        else:
            self.engine.set_view(base)
        log.info("dns: reloaded: %d zone(s), %d policy name(s), %d map(s)", len(base.zones), len(base.names),
                 len(base.maps))
        return ("dns",)

    def status(self) -> dict:
        """What ``GET /dns`` of the runtime API shows: listeners, view, cache, counters."""
        view = self.engine.view
        return {
            "listen": [str(e) for e in self.settings.listen],
            "view_version": view.version,
            "zones": sorted(name_to_text(z.origin) for z in view.zones),
            "names": sorted(name_to_text(p.name) for p in view.names.values()),
            "maps": sorted(name_to_text(m.domain) for m in view.maps.values()),
            "ecs": view.ecs,
            "cache_entries": len(self.engine.cache),
            "counters": dict(self.engine.stats),
        }

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        for t in self._udp:
            t.close()
        self._udp.clear()
        if self._threads:
            threads, self._threads = self._threads, []
            await asyncio.get_running_loop().run_in_executor(None, lambda: [t.stop() for t in threads])
        for s in self._tcp:
            s.close()
        for s in self._tcp:
            await s.wait_closed()
        self._tcp.clear()


def _factory(runtime: Runtime) -> list[DnsServer]:
    settings = runtime.config.section("dns")
    if settings is None:
        return []
    assert isinstance(settings, DnsSettings)
    errors = check_references(settings, runtime.config.pools, runtime.config.regions)
    if errors:
        for e in errors:
            logging.getLogger("herder.config").error("%s", e)
        log.error("dns: %d configuration error(s); not starting", len(errors))
        raise SystemExit(1)
    return [DnsServer(settings, runtime.pool_state, regions=runtime.config.regions)]


def _config_check(config, report) -> list[str]:
    settings = config.section("dns")
    if not isinstance(settings, DnsSettings):
        return []
    return check_references(settings, config.pools, config.regions)


register_config_check(_config_check)


def _api_status(runtime: Runtime, request: Request) -> tuple[int, object]:
    servers = [c for c in runtime.components if isinstance(c, DnsServer)]
    if not servers:
        return 404, {"error": "no [dns] section in the configuration"}
    return 200, servers[0].status()


add_route("GET", "/dns", _api_status)
register_section("dns", DNS_SECTION)
register_component("dns", _factory, order=40)
