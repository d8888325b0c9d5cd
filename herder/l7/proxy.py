"""The HTTP/1.x reverse proxy: asyncio protocols that move bytes between clients and servers.

Theory of operation
-------------------
One :class:`ClientConnection` per accepted connection parses requests with httptools
(llhttp, strict). For each request it picks a pool (the service's, or an ACL rule's), a
server (persistence cookie first, then the pool's balance algorithm, with ``attempt`` so
that a retry goes elsewhere), takes an idle :class:`ServerConnection` to that server from
the pool's keep-alive cache or opens one, and sends a rebuilt request head (hop-by-hop
headers removed, X-Forwarded-For added) followed by the body as it arrives.

Responses are *not* parsed header by header (see herder.l7.core.http): the head is found,
scanned once for framing and hop-by-hop headers, and passed on; the body is relayed as it
arrives, counted down for Content-Length, followed through httptools for chunked bodies,
and read to EOF when close-delimited.

Flow control both ways: when one side's transport stops accepting writes, the other side's
reading is paused (uvicorn's pattern), so a slow client never makes the proxy buffer a
large response. Requests pipelined by a client are answered in order, one at a time.

Timeouts (HAProxy's names): ``http-request`` (a complete head, else 408), ``client``
(idle), ``http-keep-alive`` (between requests), ``connect``, ``server`` (504). They are
deadlines checked by one reaper task per proxy, so the per-request path arms no timers.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httptools

from herder.l7.core.acl import RequestView, Routing
from herder.l7.core.cache import Cache, CachePolicy, Entry, freshness, request_bypasses
from herder.l7.core.cookie import CookiePolicy, request_cookie, response_cookies
from herder.l7.core.http import (
    MAX_HEAD,
    BadResponse,
    ResponseHead,
    error_response,
    parse_response_head,
    response_head_memo,
)
from herder.l7.core.rules import HttpRule, RateTable, apply_rules
from herder.pool.model import Endpoint
from herder.pool.state import PoolView, ServerView, Snapshot

if TYPE_CHECKING:
    from herder.pool.state import PoolState

__all__ = ["HttpProxy", "ProxySettings", "PoolSettings"]

log = logging.getLogger(__name__)

#: True when this module is the compiled extension (setup.py builds it with Cython when it
#: can, declarations in proxy.pxd); False when it runs as the plain Python source.
COMPILED: bool = not __file__.endswith((".py", ".pyc"))
_SRC = os.path.join(os.path.dirname(__file__), "proxy.py")
if COMPILED and os.path.exists(os.path.join(os.path.dirname(__file__), "..", "..", "setup.py")) \
        and os.path.exists(_SRC) and os.path.getmtime(_SRC) > os.path.getmtime(__file__):
    # a source checkout (editable install) where proxy.py changed after the build
    log.warning("%s is older than proxy.py next to it: rebuild it (make, or pip install -e .)", __file__)

HIGH_WATER = 64 * 1024
_now = time.monotonic
_INF = float("inf")


@dataclass(frozen=True)
class PoolSettings:
    """What the proxy needs per pool (HAProxy backend options)."""

    cookie: CookiePolicy | None = None
    retries: int = 3
    redispatch: bool = True
    timeout_connect: float = 5.0
    timeout_server: float = 30.0
    timeout_queue: float = 0.0
    forwardfor: bool = False
    forwardfor_header: bytes = b"X-Forwarded-For"
    forwardfor_except: tuple = ()
    http_mode: str = "keep-alive"  # keep-alive | server-close | close


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy needs per service (HAProxy frontend options)."""

    listen: tuple[Endpoint, ...]
    pool: str
    timeout_client: float = 30.0
    timeout_http_request: float = 10.0
    timeout_http_keep_alive: float = 10.0
    forwardfor: bool = False
    forwardfor_header: bytes = b"X-Forwarded-For"
    forwardfor_except: tuple = ()
    http_mode: str = "keep-alive"
    maxconn: int = 10000
    pools: dict[str, PoolSettings] = field(default_factory=dict)
    #: ACL routing (use_backend rules); None: everything goes to ``pool``.
    routing: Routing | None = None
    #: ``http-request`` rules, in order.
    rules: tuple[HttpRule, ...] = ()
    rate_limit: RateLimit | None = None
    cache: CachePolicy | None = None


@dataclass(frozen=True)
class RateLimit:
    """Answer ``status`` to a source above ``requests`` per ``period`` seconds (sliding).
    ``tracked``: only requests that a ``track`` rule selected are counted and limited."""

    requests: int
    period: float
    status: int = 429
    tracked: bool = False
    size: int = 100_000


# ------------------------------------------------------------------------------ pools


class _Slot:
    """One server of a pool as the request path sees it.

    Rebuilt with every snapshot of the pool; the requests in flight and the idle
    keep-alive connections carry over by name (idle ones only while the address stays).
    """

    def __init__(self, view: ServerView) -> None:
        server = view.server
        self.name = server.name
        self.view = view
        self.address = server.address
        c = server.meta.get("cookie")
        #: The persistence cookie value naming this server (None: it takes no part).
        self.cookie: bytes | None = c.encode() if isinstance(c, str) and c else None
        #: With cookie insert: the response header lines that set it (b"": none).
        self.set_cookie = b""
        #: A sticky session may still come here (draining and stopping servers accept them).
        self.sticky = view.accepts_persistent
        m = server.meta.get("maxconn")
        self.maxconn = m if isinstance(m, int) and m > 0 else 0
        #: Requests in flight (what maxconn limits; counted only when some server has a
        #: maxconn or the algorithm reads connection counts).
        self.active = 0
        self.idle: list[ServerConnection] = []
        #: Requests sent to this server (retries included), carried over like ``active``.
        self.requests = 0


class Backend:
    """A pool as the proxy sees it: the current picker, its servers and idle connections.

    Rebuilt from each pool-state snapshot (never mutated by requests, except for the idle
    connection cache and the per-server in-flight counters).
    """

    def __init__(self, name: str, settings: PoolSettings, mode: str = "keep-alive") -> None:
        self.name = name
        self.settings = settings
        #: The effective connection mode (the service's and the pool's combined).
        self.mode = mode
        self.keep_alive = mode == "keep-alive"
        self.timeout_server = settings.timeout_server
        self.cookie = settings.cookie
        self.view: PoolView | None = None
        #: The pool has passive health detection: report every response's outcome.
        self.passive = False
        self.policy = None
        self.picker = None
        self.key_kind = "none"
        #: The picker reads connection counters (least connections...): tell it of each request.
        self.counts = False
        self.slots: dict[str, _Slot] = {}
        self.by_cookie: dict[bytes, _Slot] = {}
        #: Some server has a maxconn (requests may have to queue).
        self.limited = False
        pol = settings.cookie
        #: Cookie insert mode: responses get the server's prepared Set-Cookie.
        self.insert = pol is not None and pol.mode == "insert"
        #: Cookie prefix/rewrite: the server's Set-Cookie headers are read and rewritten.
        self.reads_cookies = pol is not None and pol.reads_server_cookies
        self.nocache = pol is not None and pol.nocache
        #: Heads already scanned, for the fast path: requests other than HEAD and not stored
        #: in the cache (None: this pool's cookie mode rewrites Set-Cookie, no fast path).
        self.plain_heads: dict[bytes, ResponseHead] | None = None
        if not self.reads_cookies:
            self.plain_heads = response_head_memo(head_request=False, want_cookies=False, want_cache=self.nocache)
        #: Requests waiting for a free server: (priority class, arrival order, client, request).
        self.queue: list[tuple[int, int, ClientConnection, Request]] = []
        self._seq = 0
        #: Replaced by a reconfiguration: connections close when their exchange ends.
        self.retired = False

    def update(self, view: PoolView | None) -> None:
        from herder.l7.picking import build_picker, policy_for

        old = self.slots
        if view is None:
            self.view = None
            self.picker = None
            self.slots = {}
            self.by_cookie = {}
            self.limited = False
            for slot in old.values():
                _close_all(slot.idle)
            return
        if self.view is None or self.view.pool != view.pool or self.policy is None:
            self.policy = policy_for(view)
            self.key_kind = self.policy.key.kind
            self.picker = None
        self.view = view
        self.passive = view.pool.settings.get("passive") is not None
        self.picker = build_picker(view, self.policy, self.picker)
        self.counts = self.picker.counts_load
        slots = {}
        by_cookie = {}
        pol = self.settings.cookie
        for v in view.servers:
            slot = _Slot(v)
            if self.insert and slot.cookie is not None:
                assert pol is not None
                cookies, _ = response_cookies([], pol, slot.cookie, False)
                slot.set_cookie = b"".join([b"\r\nSet-Cookie: " + c for c in cookies])
            prev = old.get(slot.name)
            if prev is not None:
                slot.active = prev.active
                slot.requests = prev.requests
                if prev.address == slot.address and slot.sticky:
                    slot.idle = prev.idle
                else:
                    _close_all(prev.idle)
            slots[slot.name] = slot
            if slot.cookie is not None:
                by_cookie[slot.cookie] = slot
        for name, prev in old.items():
            if name not in slots:
                _close_all(prev.idle)
        self.slots = slots
        self.by_cookie = by_cookie
        self.limited = any(slot.maxconn for slot in slots.values())

    def pick(self, key: int | None, attempt: int, avoid: str | None = None) -> _Slot | None:
        """A server with room (maxconn) for a new request, or None (all full or none usable).

        ``attempt`` moves a retry to another server; full servers are skipped by asking
        for further attempts, at most once per server.
        """
        picker = self.picker
        if picker is None:
            return None
        if not self.limited:
            t = picker.pick(key, attempt, avoid)
            return None if t is None else self.slots.get(t.name)
        for i in range(max(len(picker), 1)):
            t = picker.pick(key, attempt + i, avoid)
            if t is None:
                return None
            slot = self.slots.get(t.name)
            if slot is not None and (not slot.maxconn or slot.active < slot.maxconn):
                return slot
        return None

    def release_slot(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is not None and slot.active > 0:
            slot.active -= 1
        if self.counts and self.picker is not None:
            self.picker.on_release(name)
        if self.queue:
            self.wake()

    def enqueue(self, client: ClientConnection, req: Request, deadline: float) -> None:
        self._seq += 1
        req.queued_until = deadline
        heapq.heappush(self.queue, (req.priority, self._seq, client, req))

    def wake(self) -> None:
        """Hand freed slots to queued requests, higher priority classes (lower numbers) first."""
        while self.queue:
            _, _, client, req = self.queue[0]
            if client.closing or req is not client.active:
                heapq.heappop(self.queue)
                continue
            pinned = req.server
            if pinned is not None:
                pinned = self.slots.get(pinned.name)
                if pinned is not None and pinned.maxconn and pinned.active >= pinned.maxconn:
                    return
            if pinned is None and self.pick(None, 0) is None:
                return
            heapq.heappop(self.queue)
            req.queued_until = 0.0
            client.dispatch(req)

    def expire_queue(self, now: float) -> None:
        if not any(req.queued_until and req.queued_until < now for _, _, _, req in self.queue):
            return
        keep = []
        for item in self.queue:
            _, _, client, req = item
            if req.queued_until and req.queued_until < now:
                req.queued_until = 0.0
                if req is client.active and not client.closing:
                    client.respond_error(503)
            else:
                keep.append(item)
        heapq.heapify(keep)
        self.queue = keep

    def release(self, conn: ServerConnection) -> None:
        """Keep ``conn`` for a next request to its server (closed if the server went away)."""
        slot = self.slots.get(conn.name)
        if self.retired:
            conn.close()
        elif slot is not None and slot.sticky and (slot.address is conn.endpoint or slot.address == conn.endpoint):
            slot.idle.append(conn)
        else:
            conn.close()

    def idle_connections(self) -> int:
        return sum(len(slot.idle) for slot in self.slots.values())

    def close_idle(self) -> None:
        for slot in self.slots.values():
            _close_all(slot.idle)


def _close_all(conns: list[ServerConnection]) -> None:
    while conns:
        conns.pop().close()


# ------------------------------------------------------------------------------ requests


class Request:
    """One request being proxied (per-request state)."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.complete = False
        self.chunked = False
        self.content_length: int | None = None
        self.host: bytes | None = None
        self.attempt = 0
        #: The server chosen (a retry without redispatch keeps it).
        self.server: _Slot | None = None
        self.backend: Backend | None = None
        self.client_had_cookie = False
        self.sent_head = False
        #: The last server tried (a retry avoids it).
        self.last_tried: str | None = None
        self.expect_continue = False
        #: The server whose maxconn slot this request holds (released exactly once).
        self.slot: str | None = None
        self.priority = 0
        self.queued_until = 0.0
        #: A GET the cache may store the response of.
        self.cacheable = False
        self.hosts = 0
        #: The request's Connection header has a keep-alive token.
        self.keep_alive_token = False
        #: Headers named in Connection (hop-by-hop, not forwarded); None: none.
        self.conn_named: list[bytes] | None = None
        self.upgrade_hdr: tuple[bytes, bytes] | None = None
        #: Body bytes received before the request could be sent on (a list once there are some).
        self.body: list[bytes] | tuple[()] = ()
        #: The values of the request's Cookie headers (a list once there are some).
        self.cookie_values: list[bytes] | tuple[()] = ()

    @property
    def idempotent(self) -> bool:
        return self.method in (b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE")


_H_PLAIN, _H_HOST, _H_COOKIE, _H_CONTENT_LENGTH, _H_TRANSFER_ENCODING, _H_CONNECTION, _H_EXPECT, _H_UPGRADE, \
    _H_HOP = range(9)
#: Request headers the proxy acts on (everything else is forwarded as received).
_REQ_SPECIAL = {
    b"host": _H_HOST, b"cookie": _H_COOKIE, b"content-length": _H_CONTENT_LENGTH,
    b"transfer-encoding": _H_TRANSFER_ENCODING, b"connection": _H_CONNECTION, b"expect": _H_EXPECT,
    b"upgrade": _H_UPGRADE, b"keep-alive": _H_HOP, b"proxy-connection": _H_HOP, b"te": _H_HOP, b"trailer": _H_HOP,
}
#: Header names as received -> their class: one lookup instead of lower() and a lookup.
_REQ_CLASS: dict[bytes, int] = {}


def _classify(name: bytes) -> int:
    code = _REQ_SPECIAL.get(name.lower(), _H_PLAIN)
    if len(_REQ_CLASS) < 4096:  # clients choose names: bounded
        _REQ_CLASS[name] = code
    return code



class _HeadTooLarge(Exception):
    pass


class _Discard:
    """The parser of a connection whose input is over: whatever else arrives is dropped."""

    def feed_data(self, data: bytes) -> None:
        pass


_DISCARD = _Discard()


class _BadRequest(Exception):
    pass


class ClientConnection:
    """One client connection: parses requests, proxies them one at a time, in order."""

    def __init__(self, proxy: HttpProxy) -> None:
        # Every attribute is set here, in one order: CPython 3.11 reads instance attributes
        # several times faster than class-level defaults, and these are read per request.
        self.proxy = proxy
        self.settings = proxy.settings
        self.parser = httptools.HttpRequestParser(self)
        #: Requests parsed and not yet answered, in order (pipelining; rarely more than one).
        self.queue: list[Request] = []
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.current: Request | None = None  # being parsed
        self.active: Request | None = None  # being proxied
        self.upstream: ServerConnection | None = None
        self.head_size = 0
        self.closing = False
        self.tunnel = False
        self.write_paused = False
        self.read_paused = False
        self.deadline = 0.0
        self.deadline_status = 408
        self.in_head = True
        self.head_bytes = 0
        self.pending = False
        #: Accepted beyond the service's maxconn: not read until a slot frees.
        self.waiting = False
        #: What arrived while waiting (uvloop delivers a first read even when paused).
        self.held: list[bytes] | None = None
        #: The pool ``extra`` (X-Forwarded-For) was computed for.
        self.extra_for: Backend | None = None
        self.extra = b""

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio and uvloop both set TCP_NODELAY on TCP transports already)
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        px = self.proxy
        px.clients.add(self)
        self.deadline = _now() + self.settings.timeout_http_request
        if px.serving >= self.settings.maxconn:
            # Over the service's maxconn: the connection waits, unread, for a slot (HAProxy
            # leaves it in the accept queue); the request timeout still applies.
            self.waiting = True
            self.held = []
            transport.pause_reading()  # type: ignore[attr-defined]
            px.waiting.append(self)
        else:
            px.serving += 1

    def connection_lost(self, exc: Exception | None) -> None:
        px = self.proxy
        px.clients.discard(self)
        if self.waiting:
            self.waiting = False
        else:
            px.serving -= 1
            while px.waiting and px.serving < self.settings.maxconn:
                nxt = px.waiting.popleft()
                if nxt.transport is None or not nxt.waiting:
                    continue
                nxt.waiting = False
                px.serving += 1
                nxt.deadline = _now() + self.settings.timeout_http_request
                nxt.transport.resume_reading()
                held, nxt.held = nxt.held or [], None
                for data in held:
                    nxt.data_received(data)
        self.closing = True
        if self.active is not None:
            self._release(self.active)
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.client_gone()
        self.transport = None
        # the parser holds this protocol's callbacks: break the cycle, free without the GC
        self.parser = None

    def data_received(self, data: bytes) -> None:
        if self.waiting:
            # uvloop delivers the first read even when connection_made paused reading
            self.held.append(data)  # type: ignore[union-attr]
            self.transport.pause_reading()  # type: ignore[union-attr]
            return
        if self.tunnel:
            if self.upstream is not None and self.upstream.transport is not None:
                self.upstream.transport.write(data)
            return
        if self.closing:
            return
        if self.in_head:
            # Bytes of a head not yet complete (llhttp buffers a header line until it ends):
            # bound them here, before the parser accumulates them.
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD + 4096:
                self.fail(431)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # The rest of ``data`` belongs to the upgraded protocol (after a 101).
            off = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
            rest = data[off:]
            if rest and self.current is not None:
                self.current.body = [*self.current.body, rest]
            self._dispatch_pending()
        except httptools.HttpParserError as e:
            # httptools wraps exceptions raised in callbacks; the cause says which it was
            cause = e.__cause__ or e.__context__
            req = self.current
            if isinstance(e, _HeadTooLarge) or isinstance(cause, _HeadTooLarge):
                self.fail(431)
            elif (e.args and str(e.args[0]).startswith("Data after") and req is not None and req.complete
                    and not req.keep_alive):
                # Bytes after a request that closes the connection (HTTP/1.0, or "Connection:
                # close"): llhttp refuses them. The request is answered, the rest ignored.
                self.parser = _DISCARD
                self._dispatch_pending()
            else:
                log.debug("%s: bad request: %s", self.peer, e)
                self.fail(400)
        except _HeadTooLarge:
            self.fail(431)
        except _BadRequest:
            self.fail(400)
        else:
            if self.in_head and self.deadline_status != 408 and self.current is not None:
                # a head begun and not complete: the http-request timeout runs (408)
                self.deadline = _now() + self.settings.timeout_http_request
                self.deadline_status = 408
            if self.pending and self.active is None and not self.closing:  # _dispatch_pending()
                self.pending = False
                self.start_next()

    def _dispatch_pending(self) -> None:
        # A request is dispatched only once the whole chunk of input that carried its head
        # parsed cleanly: a smuggling attempt sent in one packet (a bad chunk size after a
        # good head, say) is rejected before any byte of it reaches a server.
        if self.pending and self.active is None and not self.closing:
            self.pending = False
            self.start_next()

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    def eof_received(self) -> bool | None:
        # A half-closed client still gets its response.
        return True if (self.active is not None) else None

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        # (the http-request deadline is armed by data_received, only if the head stays incomplete)
        self.current = Request()
        self.head_size = 0
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            raise _HeadTooLarge
        assert self.current is not None
        self.current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            raise _HeadTooLarge
        req = self.current
        assert req is not None
        code = _REQ_CLASS.get(name)
        if code is None:
            code = _classify(name)
        if code == _H_PLAIN:
            req.headers.append((name, value))
        elif code == _H_HOST:
            req.hosts += 1
            req.host = value
            req.headers.append((name, value))
        elif code == _H_COOKIE:
            if req.cookie_values:
                req.cookie_values.append(value)  # type: ignore[union-attr]
            else:
                req.cookie_values = [value]
        elif code == _H_CONTENT_LENGTH:
            req.content_length = int(value)
            req.headers.append((name, value))
        elif code == _H_TRANSFER_ENCODING:
            if value.rsplit(b",", 1)[-1].strip().lower() != b"chunked":
                raise _BadRequest  # RFC 9112 §6.3: chunked must be the final coding
            req.chunked = True
        elif code == _H_CONNECTION:
            for t in value.split(b","):
                t = t.strip().lower()
                if t == b"keep-alive":
                    req.keep_alive_token = True
                elif t not in (b"close", b"upgrade"):
                    if req.conn_named is None:
                        req.conn_named = []
                    req.conn_named.append(t)
        elif code == _H_EXPECT:
            if value.lower() == b"100-continue":
                req.expect_continue = True
            req.headers.append((name, value))
        elif code == _H_UPGRADE:
            req.upgrade_hdr = (name, value)
        # other hop-by-hop headers are dropped

    def on_headers_complete(self) -> None:
        req = self.current
        assert req is not None
        p = self.parser
        req.method = p.get_method()
        req.keep_alive = keep_alive = p.should_keep_alive()
        if not keep_alive or req.keep_alive_token:
            req.version = p.get_http_version()
        # else: persistent without "Connection: keep-alive": llhttp says that is HTTP/1.1 (1.0,
        # 0.9 and 2.0 are persistent only with the token), the class default; asking the
        # parser costs as much as the rest of this function
        if p.should_upgrade():
            req.upgrade = True
            if req.upgrade_hdr is not None:
                req.headers.append(req.upgrade_hdr)
        if req.conn_named:
            named = set(req.conn_named)
            req.headers = [(k, v) for k, v in req.headers if k.lower() not in named]
        if req.hosts != 1 and (req.hosts > 1 or req.version == "1.1"):
            raise _BadRequest
        if req.chunked and req.version == "1.0":
            raise _BadRequest  # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is a framing attack
        self.in_head = False
        self.head_bytes = 0
        # No client deadline while the request is being answered (the reaper leaves active
        # connections alone); response_done() arms the keep-alive one.
        self.deadline_status = 0
        self.queue.append(req)
        if self.active is None:
            self.pending = True
        elif not self.read_paused and self.transport is not None:
            # Pipelined: hold further input until the current response is done.
            self.read_paused = True
            self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        req = self.current
        assert req is not None
        if req is self.active and self.upstream is not None and req.sent_head:
            self.upstream.send_body(req, body)
        else:
            if req.body:
                req.body.append(body)  # type: ignore[union-attr]
            else:
                req.body = [body]
            if sum(map(len, req.body)) > HIGH_WATER and not self.read_paused and self.transport is not None:
                self.read_paused = True
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        req = self.current
        assert req is not None
        req.complete = True
        if req is self.active and self.upstream is not None and req.sent_head:
            self.upstream.end_body(req)

    # -- proxying
    def start_next(self) -> None:
        if not self.queue or self.closing:
            return
        req = self.queue.pop(0)
        self.active = req
        px = self.proxy
        self.settings = px.settings  # a reconfiguration applies from the next request on
        if self.read_paused and not self.queue and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()
        backend = px.direct
        if backend is None:
            # rules, rate limit or routing decide (or the pool does not exist: 503)
            backend = self._route(req)
            if backend is None:
                return
        req.backend = backend
        cache = px.cache
        if cache is not None and req.method in (b"GET", b"HEAD") and self._from_cache(req, cache):
            return
        pol = backend.cookie
        if pol is not None and req.cookie_values:
            value, new_values = request_cookie(req.cookie_values, pol)
            if new_values is not None:
                req.cookie_values = new_values
            if value is not None:
                slot = backend.by_cookie.get(value)
                if slot is not None and slot.sticky:
                    req.server = slot
                    req.client_had_cookie = True
        self.dispatch(req)

    def _route(self, req: Request) -> Backend | None:
        """Apply the http-request rules, the rate limit and the routing ACLs: the backend
        the request goes to, or None when it was answered here."""
        st = self.settings
        pool = st.pool
        view = RequestView(req.method, req.target, req.headers, self.peer)
        if st.rules:
            d = apply_rules(st.rules, view, req.headers)
            if d.status:
                self.respond_error(d.status, location=d.location)
                return None
            req.priority = d.priority
        if st.rate_limit is not None and (d.track if st.rules and st.rate_limit.tracked else True):
            rate = self.proxy.rates.hit(self.peer, _now())
            if rate > st.rate_limit.requests:
                self.respond_error(st.rate_limit.status)
                return None
        if st.routing is not None:
            chosen = st.routing.route(view)
            if chosen is not None:
                pool = chosen
        backend = self.proxy.backends.get(pool)
        if backend is None:
            self.respond_error(503)
        return backend

    def dispatch(self, req: Request) -> None:
        """Send ``req`` to a server: its sticky one, else the pool's pick (queued when every
        usable server is at its maxconn, 503 when none is usable)."""
        backend = req.backend
        assert backend is not None
        slot = req.server
        if slot is not None:
            # the sticky (or not redispatched) server, as the current snapshot has it
            slot = backend.slots.get(slot.name)
            if slot is not None and slot.maxconn and slot.active >= slot.maxconn:
                # a sticky request waits for its own server (HAProxy's per-server queue)
                req.server = slot
                self._queue(req, backend)
                return
        if slot is None:
            if backend.limited or backend.key_kind != "none":
                slot = backend.pick(None if backend.key_kind == "none" else self._key(req, backend), req.attempt,
                                    req.last_tried)
            else:  # backend.pick(), inlined
                picker = backend.picker
                t = picker.pick(None, req.attempt, req.last_tried) if picker is not None else None
                slot = backend.slots.get(t.name) if t is not None else None
            if slot is None:
                if backend.limited and backend.picker is not None and len(backend.picker):
                    self._queue(req, backend)  # every usable server is at its maxconn
                else:
                    self.respond_error(503)
                return
        name = slot.name
        req.server = slot
        req.last_tried = name
        slot.requests += 1
        if backend.limited or backend.counts:
            req.slot = name
            slot.active += 1
            if backend.counts:
                backend.picker.on_connect(name)  # type: ignore[union-attr]
        if backend.keep_alive:
            idle = slot.idle
            while idle:
                conn = idle.pop()
                t = conn.transport
                if t is not None and not t.is_closing():
                    conn.attach(self, req, True)
                    return
        conn = ServerConnection(self.proxy, backend, slot.address, name)
        self.proxy.connecting += 1
        (self.proxy.loop or asyncio.get_running_loop()).create_task(conn.connect(self, req))

    def _key(self, req: Request, backend: Backend) -> int | None:
        if backend.key_kind == "none" or backend.policy is None:
            return None
        headers = req.headers
        cookies = req.cookie_values

        def header(name: str) -> str | None:
            if name.lower() == "cookie":
                return "; ".join(v.decode("latin-1") for v in cookies) if cookies else None
            lname = name.lower().encode()
            for k, v in headers:
                if k.lower() == lname:
                    return v.decode("latin-1")
            return None

        return backend.policy.key.extract(src=self.peer, uri=req.target.decode("latin-1"), headers=header)

    def _from_cache(self, req: Request, cache: Cache) -> bool:
        """Answer from the cache if it can; else mark a GET whose response may be stored."""
        cc = pragma = None
        auth = False
        for k, v in req.headers:
            lk = k.lower()
            if lk == b"cache-control":
                cc = v
            elif lk == b"pragma":
                pragma = v
            elif lk == b"authorization":
                auth = True
        if request_bypasses(cc, pragma, auth):
            return False
        headers = req.headers

        def header(name: bytes) -> bytes | None:
            for k, v in headers:
                if k.lower() == name:
                    return v
            return None

        now = _now()
        entry = cache.lookup(req.host or b"", req.target, header, now)
        if entry is None:
            req.cacheable = req.method == b"GET"
            return False
        close = self.client_should_close(req, False)
        extra = b"\r\nAge: %d" % int(now - entry.stored_at)
        if close:
            extra += b"\r\nConnection: close"
        elif req.version == "1.0":
            extra += b"\r\nConnection: keep-alive"
        self.response_head(req, entry.head + extra + b"\r\n\r\n" + (b"" if req.method == b"HEAD" else entry.body))
        self.response_done(req, close)
        return True

    def _queue(self, req: Request, backend: Backend) -> None:
        timeout = backend.settings.timeout_queue
        if timeout <= 0:
            self.respond_error(503)
            return
        backend.enqueue(self, req, _now() + timeout)

    def _release(self, req: Request | None) -> None:
        if req is not None and req.slot is not None and req.backend is not None:
            name, req.slot = req.slot, None
            req.backend.release_slot(name)

    def connect_failed(self, req: Request, why: str) -> None:
        if req is not self.active or self.closing:
            return
        backend = req.backend
        assert backend is not None and req.server is not None
        kind = "timeout" if "timeout" in why else "reset" if "closed" in why else "connect"
        self.proxy.report(backend.name, req.server.name, False, why, kind)
        self._release(req)
        req.attempt += 1
        if req.attempt <= backend.settings.retries:
            log.debug("%s: retry %d after %s to %s", self.peer, req.attempt, why, req.server.name)
            if backend.settings.redispatch:
                req.server = None
            self.dispatch(req)
            return
        self.respond_error(503)

    def extra_request_headers(self, req: Request, backend: Backend) -> bytes:
        """The header lines the proxy adds to a request it sends on (each ends with CRLF)."""
        if self.extra_for is not backend:
            # what depends only on this client and the pool, computed once per connection
            self.extra_for = backend
            self.extra = b""
            bs = backend.settings
            if self.settings.forwardfor or bs.forwardfor:
                excepts = self.settings.forwardfor_except + bs.forwardfor_except
                if not excepts or not _in_nets(self.peer, excepts):
                    hdr = bs.forwardfor_header if bs.forwardfor else self.settings.forwardfor_header
                    self.extra = hdr + b": " + self.peer.encode() + b"\r\n"
        out = self.extra
        if req.cookie_values:
            out = b"".join([b"Cookie: " + v + b"\r\n" for v in req.cookie_values]) + out
        if req.chunked:
            out += b"Transfer-Encoding: chunked\r\n"
        if req.upgrade:
            out += b"Connection: upgrade\r\n"
        elif not backend.keep_alive:
            out += b"Connection: close\r\n"
        return out

    def response_head(self, req: Request, head: bytes) -> None:
        if self.transport is not None:
            self.transport.write(head)

    def client_should_close(self, req: Request, close_delimited: bool) -> bool:
        return (not req.keep_alive or close_delimited or self.closing
                or (req.backend is not None and req.backend.mode == "close"))

    def response_body(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def response_done(self, req: Request, close: bool) -> None:
        self.upstream = None
        self.active = None
        if req.slot is not None:
            self._release(req)
        # A response that ends before its request body did: the rest of the body cannot be
        # told apart from a next request, so the connection closes (as HAProxy does).
        if close or self.transport is None or not req.complete:
            self.close()
            return
        self.deadline = _now() + self.settings.timeout_http_keep_alive
        self.deadline_status = 0
        if self.queue:
            self.start_next()

    def start_tunnel(self, up: ServerConnection, req: Request) -> None:
        self.tunnel = True
        self.deadline = _INF
        for chunk in req.body:
            up.transport.write(chunk)  # type: ignore[union-attr]
        req.body = ()

    def respond_error(self, status: int, location: bytes = b"") -> None:
        """Answer ``status`` (with ``Location`` for a redirect) and close the connection."""
        errors = self.proxy.errors
        errors[status] = errors.get(status, 0) + 1
        req, self.active = self.active, None
        self._release(req)
        if self.transport is not None and not self.transport.is_closing():
            extra = b"Location: " + location + b"\r\n" if location else b""
            self.transport.write(error_response(status, extra=extra))
        self.close()

    def fail(self, status: int) -> None:
        """A protocol error from the client: answer ``status`` if nothing was sent yet, close."""
        self.closing = True
        if self.active is not None and self.active.sent_head and self.upstream is not None:
            # a response is in flight: we cannot answer in its middle
            self.upstream.close()
            self.close()
            return
        self.respond_error(status)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


def _http_date_delta(expires: bytes, date: bytes | None) -> float | None:
    """Expires minus Date (or now) in seconds; None when Expires cannot be parsed."""
    from email.utils import parsedate_to_datetime

    try:
        e = parsedate_to_datetime(expires.decode("latin-1")).timestamp()
        d = parsedate_to_datetime(date.decode("latin-1")).timestamp() if date else time.time()
    except (TypeError, ValueError, IndexError):
        return None
    return e - d


def _in_nets(ip: str, nets: tuple) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(a in n for n in nets)


# ------------------------------------------------------------------------------ upstream


class _Chunks:
    """httptools callbacks for following a chunked body (only end of message matters)."""

    __slots__ = ("done", "conn", "dechunk")

    def __init__(self, conn: ServerConnection, dechunk: bool) -> None:
        self.done = False
        self.conn = conn
        self.dechunk = dechunk

    def on_body(self, body: bytes) -> None:
        if self.dechunk:
            self.conn.client_body(body)

    def on_message_complete(self) -> None:
        self.done = True


_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


class ServerConnection:
    """One connection to one server; carries one request at a time, then goes idle."""

    def __init__(self, proxy: HttpProxy, backend: Backend, endpoint: Endpoint, name: str = "") -> None:
        self.proxy = proxy
        self.backend = backend
        self.endpoint = endpoint
        #: The server's name in its pool (where the connection goes back when idle).
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.req: Request | None = None
        self.buf = b""
        self.state = "idle"  # idle | head | body | tunnel | closed
        self.remaining = 0
        self.chunks: _Chunks | None = None
        self.chunk_parser = None
        self.close_delimited = False
        self.server_close = False
        self.reused = False
        self.got_bytes = False
        self.client_close = False
        self.deadline = _INF
        #: Body bytes of a response being stored in the cache (None: not storing).
        self.capture: list[bytes] | None = None
        self.capture_entry: Entry | None = None

    async def connect(self, client: ClientConnection, req: Request) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, self.endpoint.host, self.endpoint.port),
                self.backend.settings.timeout_connect,
            )
        except OSError as e:  # TimeoutError is an OSError
            why = "L4 timeout" if isinstance(e, TimeoutError) else f"L4 connection error ({e.strerror or e})"
            self.proxy.connecting -= 1
            client.connect_failed(req, why)
            return
        self.proxy.connecting -= 1
        if client.closing or req is not client.active:
            self.close()
            return
        self.attach(client, req, reused=False)

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.proxy.servers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.servers.discard(self)
        self.transport = None
        client, req = self.client, self.req
        self.client = self.req = None
        if client is None or req is None:
            return
        if self.state == "tunnel":
            client.close()
            return
        if self.state == "body" and self.close_delimited:
            client.response_done(req, True)
            return
        if (not self.got_bytes and self.reused and req.idempotent and not client.closing
                and not req.chunked and not req.content_length):
            # A kept-alive connection the server had closed: retry on a new one, silently.
            req.sent_head = False
            client.upstream = None
            client.dispatch(req)
            return
        client.upstream = None
        if self.state == "head" and not self.got_bytes:
            if req.idempotent and not req.chunked and not req.content_length and not client.closing:
                # Nothing reached the client yet and the request can be replayed: count it
                # as a failed attempt and retry (on another server with redispatch).
                req.sent_head = False
                client.connect_failed(req, "L7 connection closed before response")
                return
            self.proxy.report(self.backend.name, req.server.name if req.server else "?", False,
                              "L7 connection closed before response", "reset")
            client.respond_error(502)
        else:
            client.abort()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        st = self.state
        if st == "head":
            req = self.req
            backend = self.backend
            if not self.buf and req is not None and backend.plain_heads is not None and not req.cacheable \
                    and req.method != b"HEAD":
                # The fast path: a head seen before, framed by Content-Length, with all of its
                # (small) body in this read. One write to the client, and the exchange ends.
                end = data.find(b"\r\n\r\n")
                rh = backend.plain_heads.get(data[:end]) if end > 0 else None
                if rh is not None and rh.plain and len(data) - end - 4 <= rh.length:
                    self._fast_response(data, end, rh, req, backend)
                    return
            self.on_head_data(data)
            return
        if st == "body" and self.remaining > 0:
            n = len(data)
            if n <= self.remaining:
                self.remaining -= n
                self.deadline = _now() + self.backend.settings.timeout_server
                self.client_body(data)
                if self.remaining == 0:
                    self.finish()
                return
        if st == "tunnel":
            if self.client is not None and self.client.transport is not None:
                self.client.transport.write(data)
            return
        if st == "body":
            self.on_body_data(data)
            return
        # data on an idle connection: the server is confused; drop the connection
        self.close()

    def pause_writing(self) -> None:
        c = self.client
        if c is not None and c.transport is not None:
            c.transport.pause_reading()

    def resume_writing(self) -> None:
        c = self.client
        if c is not None and c.transport is not None and not c.read_paused:
            c.transport.resume_reading()

    # -- request side
    def attach(self, client: ClientConnection, req: Request, reused: bool) -> None:
        self.client = client
        self.req = req
        self.reused = reused
        self.got_bytes = False
        self.state = "head"  # (buf is empty: an idle connection has no partial head)
        client.upstream = self
        backend = self.backend
        if client.extra_for is backend and backend.keep_alive and not (req.cookie_values or req.chunked or req.upgrade):
            extra = client.extra  # what extra_request_headers() would say
        else:
            extra = client.extra_request_headers(req, backend)
        if req.headers:
            data = b"".join([req.method, b" ", req.target, b" HTTP/1.1\r\n",
                             b"\r\n".join([k + b": " + v for k, v in req.headers]), b"\r\n", extra, b"\r\n"])
        else:
            data = b"".join([req.method, b" ", req.target, b" HTTP/1.1\r\n", extra, b"\r\n"])
        if req.body and not req.upgrade:
            for chunk in req.body:
                data += (b"%x\r\n%s\r\n" % (len(chunk), chunk)) if req.chunked else chunk
            req.body = ()
        if req.complete and req.chunked:
            data += b"0\r\n\r\n"
        req.sent_head = True
        self.deadline = _now() + backend.timeout_server
        assert self.transport is not None
        self.transport.write(data)
        if client.read_paused and not client.queue and client.transport is not None:
            client.read_paused = False
            client.transport.resume_reading()

    def send_body(self, req: Request, body: bytes) -> None:
        if self.transport is None:
            return
        if req.chunked:
            self.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.transport.write(body)

    def end_body(self, req: Request) -> None:
        if self.transport is not None and req.chunked:
            self.transport.write(b"0\r\n\r\n")

    # -- response side
    def _fast_response(self, data: bytes, end: int, rh: ResponseHead, req: Request, backend: Backend) -> None:
        """:meth:`on_head_data` for a known plain head with its body in ``data`` (same result)."""
        client = self.client
        assert client is not None
        if backend.passive and req.server is not None:
            self.proxy.report(backend.name, req.server.name, rh.status < 500, f"L7 status {rh.status}", "http_5xx")
        self.server_close = rh.server_close or not backend.keep_alive
        self.close_delimited = False
        extra = b""
        if backend.insert:
            slot = req.server
            if slot is not None and slot.set_cookie and not req.client_had_cookie:
                extra = slot.set_cookie
                if backend.nocache and rh.cacheable_hint is None:
                    extra += b"\r\nCache-Control: private"
        close = not req.keep_alive or client.closing or backend.mode == "close" or req.upgrade
        self.client_close = close
        if close:
            extra += b"\r\nConnection: close"
        elif req.version == "1.0":
            extra += b"\r\nConnection: keep-alive"
        body = len(data) - end - 4
        if client.transport is not None:
            client.transport.write(rh.head + extra + b"\r\n\r\n" + data[end + 4:] if body else rh.head + extra + b"\r\n\r\n")
        if body < rh.length:  # type: ignore[operator]
            self.remaining = rh.length - body  # type: ignore[operator]
            self.state = "body"
            return
        self.client = self.req = None
        self.state = "idle"
        self.deadline = _INF
        t = self.transport
        slot = backend.slots.get(self.name)
        if (not self.server_close and req.complete and t is not None and not t.is_closing() and slot is not None
                and slot.sticky and slot.address is self.endpoint and not backend.retired):
            slot.idle.append(self)  # backend.release(), inlined
        elif not self.server_close and req.complete and t is not None and not t.is_closing():
            backend.release(self)
        else:
            self.close()
        client.response_done(req, close)

    def on_head_data(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        client, req = self.client, self.req
        assert client is not None and req is not None
        backend = self.backend
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.bad_response("response head too large")
                    return
                self.buf = buf
                return
            try:
                rh = parse_response_head(buf[:end], request_method=req.method, want_cookies=backend.reads_cookies,
                                         want_cache=req.cacheable or backend.nocache)
            except BadResponse as e:
                self.bad_response(str(e))
                return
            rest = buf[end + 4:]
            if rh.informational:
                if req.version == "1.1":
                    client.response_head(req, rh.head + b"\r\n\r\n")
                buf = rest
                if not buf:
                    self.buf = b""
                    return
                continue
            break
        self.buf = b""
        if backend.passive and req.server is not None:
            self.proxy.report(backend.name, req.server.name, rh.status < 500, f"L7 status {rh.status}", "http_5xx")
        self.server_close = rh.server_close or not backend.keep_alive
        self.close_delimited = rh.close_delimited
        extra = b""
        slot = req.server
        if backend.insert:
            # cookie insert: the chosen server's Set-Cookie, prepared with the snapshot
            if slot is not None and slot.set_cookie and not req.client_had_cookie:
                extra = slot.set_cookie
                if backend.nocache and rh.cacheable_hint is None:
                    extra += b"\r\nCache-Control: private"
        elif backend.settings.cookie is not None:
            cookies, private = response_cookies(rh.set_cookies, backend.settings.cookie,
                                                slot.cookie if slot is not None else None, req.client_had_cookie)
            if cookies:
                extra += b"".join([b"\r\nSet-Cookie: " + c for c in cookies])
            if private and rh.cacheable_hint is None:
                extra += b"\r\nCache-Control: private"
        if rh.upgrade and req.upgrade:
            extra += b"\r\nConnection: upgrade"
            client.response_head(req, rh.head + extra + b"\r\n\r\n")
            self.state = "tunnel"
            self.deadline = _INF
            client.start_tunnel(self, req)
            if rest:
                client.response_body(rest)
            return
        dechunk = rh.chunked and req.version == "1.0"
        self.client_close = (not req.keep_alive or rh.close_delimited or dechunk or client.closing
                             or backend.mode == "close" or req.upgrade)
        if self.client_close:
            extra += b"\r\nConnection: close"
        elif req.version == "1.0":
            extra += b"\r\nConnection: keep-alive"
        if rh.chunked and not dechunk:
            extra += b"\r\nTransfer-Encoding: chunked"
        if req.cacheable and self.proxy.cache is not None:
            self._start_capture(req, rh, extra)
        head = rh.head + extra + b"\r\n\r\n"
        length = rh.length  # None when chunked or close-delimited
        if length is not None and len(rest) <= length:
            if rest and self.capture is not None:
                self.capture.append(rest)
            # the usual case: the whole (small) body came with the head: one write, not two
            self.remaining = length - len(rest)
            self.state = "body"
            if client.transport is not None:
                client.transport.write(head + rest)
            if self.remaining == 0:
                self.finish()
            return
        client.response_head(req, head)
        if rh.chunked:
            self.chunks = _Chunks(self, dechunk)
            self.chunk_parser = httptools.HttpResponseParser(self.chunks)
            self.chunk_parser.feed_data(_CHUNKED_HEAD)
            self.state = "body"
            if rest:
                self.on_body_data(rest)
            return
        if rh.close_delimited:
            self.state = "body"
            self.remaining = -1
            if rest:
                self.client_body(rest)
            return
        self.remaining = rh.length or 0
        self.state = "body"
        if self.remaining == 0:
            if rest:
                self.server_close = True
            self.finish()
            return
        if rest:
            self.on_body_data(rest)

    def on_body_data(self, data: bytes) -> None:
        self.deadline = _now() + self.backend.settings.timeout_server
        if self.chunk_parser is not None:
            assert self.chunks is not None
            try:
                self.chunk_parser.feed_data(data)
            except httptools.HttpParserError as e:
                self.bad_response(f"bad chunked body: {e}")
                return
            if not self.chunks.dechunk:
                self.client_body(data)
            if self.chunks.done:
                self.chunk_parser = None
                self.chunks = None
                self.finish()
            return
        if self.remaining < 0:
            self.client_body(data)
            return
        n = len(data)
        if n > self.remaining:
            data = data[: self.remaining]
            self.server_close = True  # extra bytes after the body: do not reuse
        self.remaining -= len(data)
        self.client_body(data)
        if self.remaining == 0:
            self.finish()

    def _start_capture(self, req: Request, rh, extra: bytes) -> None:
        cache = self.proxy.cache
        assert cache is not None
        if (rh.status != 200 or rh.chunked or rh.length is None or rh.has_set_cookie or b"Set-Cookie" in extra
                or rh.length > cache.policy.max_object_size):
            return
        vary = tuple(v.strip().lower() for v in (rh.vary or b"").split(b",") if v.strip())
        if b"*" in vary:
            return
        exp = None
        if rh.expires is not None:
            exp = _http_date_delta(rh.expires, rh.date)
            if exp is None:
                exp = 0.0  # an invalid Expires means already expired (RFC 9111 §5.3)
        fresh = freshness(rh.cacheable_hint, exp, cache.policy.max_age)
        if not fresh:
            return
        values = []
        for name in vary:
            values.append(next((v for k, v in req.headers if k.lower() == name), None))
        self.capture = []
        self.capture_entry = Entry(rh.head + extra, b"", _now(), fresh, vary, tuple(values))

    def client_body(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.append(data)
        c = self.client
        if c is not None and c.transport is not None:
            c.transport.write(data)

    def finish(self) -> None:
        client, req = self.client, self.req
        self.client = self.req = None
        if self.capture is not None:
            entry, self.capture_entry = self.capture_entry, None
            body, self.capture = b"".join(self.capture), None
            if entry is not None and req is not None and self.proxy.cache is not None:
                entry.body = body
                self.proxy.cache.store(req.host or b"", req.target, entry)
        self.state = "idle"
        self.deadline = _INF
        t = self.transport
        if not self.server_close and req is not None and req.complete and t is not None and not t.is_closing():
            self.backend.release(self)
        else:
            self.close()
        if client is not None and req is not None:
            client.response_done(req, self.client_close)

    def bad_response(self, why: str) -> None:
        log.warning("pool %s: server %s sent a bad response: %s", self.backend.name,
                    self.req.server.name if self.req and self.req.server else "?", why)
        self._abandon(f"L7 bad response ({why})", "error", 502)

    def timed_out(self) -> None:
        self._abandon("L7 timeout", "timeout", 504)

    def _abandon(self, why: str, kind: str, status: int) -> None:
        """Give up on this exchange: report it, close, and answer ``status`` if the client
        has not seen the response head yet (else cut the client's connection)."""
        client, req = self.client, self.req
        self.client = self.req = None
        if req is not None and req.server is not None:
            self.proxy.report(self.backend.name, req.server.name, False, why, kind)
        st = self.state
        self.close()
        if client is not None:
            client.upstream = None
            if st == "head":
                client.respond_error(status)
            else:
                client.abort()

    def client_gone(self) -> None:
        self.client = self.req = None
        self.close()

    def close(self) -> None:
        self.state = "closed"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


# ------------------------------------------------------------------------------ the proxy


class HttpProxy:
    """One HTTP service: listeners, the pools it routes to, and the timeout reaper."""

    def __init__(self, name: str, settings: ProxySettings, pool_state: PoolState,
                 report: Callable[[str, str, bool, str], None] | None = None) -> None:
        self.name = f"http {name} on {', '.join(str(e) for e in settings.listen)}"
        self.service = name
        self.settings = settings
        self.pool_state = pool_state
        self.backends: dict[str, Backend] = {
            p: Backend(p, s, self._combine(settings.http_mode, s.http_mode)) for p, s in settings.pools.items()
        }
        self.clients: set[ClientConnection] = set()
        #: Client connections being served (not waiting for a maxconn slot).
        self.serving = 0
        self.waiting: collections.deque[ClientConnection] = collections.deque()
        self.servers: set[ServerConnection] = set()
        rl = settings.rate_limit
        self.rates = RateTable(rl.period, rl.size) if rl is not None else RateTable(1.0, 1)
        self.cache = Cache(settings.cache) if settings.cache is not None else None
        self.connecting = 0
        #: Answers the proxy made itself (400, 403, 408, 429, 431, 502, 503, 504...) by status.
        self.errors: dict[int, int] = {}
        #: The one backend every request goes to when no rule, rate limit or ACL decides.
        self.direct: Backend | None = None
        if settings.routing is None and not settings.rules and settings.rate_limit is None:
            self.direct = self.backends.get(settings.pool)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._sub = None
        self._reaper: asyncio.Task | None = None
        self._report = report

    _MODES = ("keep-alive", "server-close", "close")

    @classmethod
    def _combine(cls, a: str, b: str) -> str:
        """The stronger of two connection modes (close > server-close > keep-alive), as
        HAProxy combines a frontend's and a backend's."""
        return cls._MODES[max(cls._MODES.index(a), cls._MODES.index(b))]

    def report(self, pool: str, server: str, ok: bool, why: str, kind: str = "error") -> None:
        """Passive health: tell the health engine how an exchange with a server went.

        ``kind`` is the health engine's error kind (connect, timeout, reset, http_5xx, error).
        """
        log.debug("pool %s: server %s: %s", pool, server, why)
        if self._report is not None:
            try:
                self._report(pool, server, ok, kind)
            except Exception:
                log.exception("passive health report failed")

    def reconfigure(self, settings: ProxySettings) -> None:
        """Serve with ``settings`` from the next request of every connection on, on the
        same listeners (``settings.listen`` is not looked at: new listeners mean a new
        proxy). A pool whose settings did not change keeps its state (idle connections,
        in-flight counts, queue); a changed or removed one is retired: its requests in
        flight finish, its connections close instead of going idle."""
        old = self.settings
        snap = self.pool_state.snapshot
        backends: dict[str, Backend] = {}
        for p, s in settings.pools.items():
            b = self.backends.get(p)
            mode = self._combine(settings.http_mode, s.http_mode)
            if b is None or b.settings != s or b.mode != mode:
                b = Backend(p, s, mode)
                b.update(snap.pools.get(p))
            backends[p] = b
        for p, b in self.backends.items():
            if backends.get(p) is not b:
                b.retired = True
                b.close_idle()
        self.backends = backends
        self.settings = settings
        if settings.rate_limit != old.rate_limit:
            rl = settings.rate_limit
            self.rates = RateTable(rl.period, rl.size) if rl is not None else RateTable(1.0, 1)
        if settings.cache != old.cache:
            self.cache = Cache(settings.cache) if settings.cache is not None else None
        self.direct = None
        if settings.routing is None and not settings.rules and settings.rate_limit is None:
            self.direct = self.backends.get(settings.pool)

    def on_snapshot(self, snap: Snapshot) -> None:
        for name, backend in self.backends.items():
            view = snap.pools.get(name)
            if backend.view is None or view is None or view.version != backend.view.version:
                backend.update(view)

    def status(self) -> dict:
        """What ``GET /l7`` of the runtime API shows for this service (HAProxy's ``show
        stat``, in short): connections, the proxy's own error answers, and per pool and
        server the requests sent, those in flight (when counted), idle connections and
        the queue."""
        pools = {}
        for name, b in self.backends.items():
            servers = []
            for slot in b.slots.values():
                servers.append({
                    "name": slot.name, "requests": slot.requests,
                    "in_flight": slot.active if (b.limited or b.counts) else None,
                    "maxconn": slot.maxconn or None, "idle_connections": len(slot.idle),
                })
            pools[name] = {"queue": len(b.queue), "servers": servers}
        return {
            "service": self.service,
            "listen": [str(e) for e in self.settings.listen],
            "ports": self.ports,
            "clients": len(self.clients), "waiting_clients": len(self.waiting),
            "server_connections": len(self.servers), "connecting": self.connecting,
            "errors": {str(k): v for k, v in sorted(self.errors.items())},
            "pools": pools,
        }

    @property
    def ports(self) -> list[int]:
        """Bound ports, in listen order (useful when a listener asked for port 0)."""
        return [s.sockets[0].getsockname()[1] for s in self._servers]  # type: ignore[attr-defined]

    async def start(self) -> None:
        self._sub = self.pool_state.subscribe(self.on_snapshot, name=f"l7 {self.service}")
        self.loop = loop = asyncio.get_running_loop()
        try:
            for ep in self.settings.listen:
                srv = await loop.create_server(lambda: ClientConnection(self), ep.host, ep.port,
                                               reuse_address=True, backlog=4096)
                self._servers.append(srv)
        except OSError:
            await self.stop()
            raise
        self._reaper = loop.create_task(self._reap())

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        for s in self._servers:
            s.close()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for c in list(self.clients):
            if c.active is None:
                c.close()
        # let in-flight responses finish briefly, then cut
        deadline = _now() + 0.5
        while any(c.active is not None for c in self.clients) and _now() < deadline:
            await asyncio.sleep(0.02)
        for c in list(self.clients):
            c.abort()
        for s in list(self.servers):
            s.close()
        for b in self.backends.values():
            b.close_idle()
        for s in self._servers:
            await s.wait_closed()
        self._servers.clear()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = _now()
            for c in list(self.clients):
                if c.deadline < now and c.active is None:
                    if c.deadline_status == 408 and c.current is not None and not c.current.complete \
                            and c.parser is not None and c.head_size > 0:
                        c.respond_error(408)
                    else:
                        c.close()
            for s in list(self.servers):
                if s.deadline < now and s.client is not None:
                    s.timed_out()
            for b in self.backends.values():
                if b.queue:
                    b.expire_queue(now)
