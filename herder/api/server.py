"""The runtime API: read the pool state, drain / maintain / re-weight servers.

Declared in the config as::

    [api]
    listen = "127.0.0.1:8404"

Routes (JSON in and out; see docs/api.md):

* ``GET /status`` -- every pool and server: health and why, admin and who asked, weights.
* ``POST /pools/{pool}/servers/{server}/admin`` with ``{"mode": "drain"}`` (ready, drain,
  maint) -- the API's own admin flag; it never clears what the config asked for.
* ``POST /pools/{pool}/servers/{server}/weight`` with ``{"weight": 5}`` (``null`` restores
  the declared weight).

Layers add routes with :func:`add_route`. The server is deliberately small (HTTP/1.1,
``Connection: close``, bodies up to 64 KiB): it is an operator's tool, not a data plane.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from herder.config.native import register_section
from herder.config.schema import Addr, Field, Table
from herder.pool.model import AdminCause, AdminMode, Endpoint
from herder.pool.state import Snapshot, UnknownPool, UnknownServer
from herder.runtime import register_component

if TYPE_CHECKING:
    from herder.runtime import Runtime

__all__ = ["ApiServer", "Request", "add_route", "snapshot_json"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    params: dict[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return {}
        return json.loads(self.body)


Handler = Callable[["Runtime", Request], Awaitable[tuple[int, Any]] | tuple[int, Any]]
_routes: list[tuple[str, re.Pattern, Handler]] = []


def add_route(method: str, pattern: str, handler: Handler) -> None:
    """Add a route; ``pattern`` uses ``{name}`` placeholders for one path segment each.

    ``handler(runtime, request)`` returns ``(status, json_value)`` (or awaits to it).
    """
    rx = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
    _routes.append((method.upper(), rx, handler))


def snapshot_json(snap: Snapshot) -> dict:
    """The pool state as plain JSON data (what ``GET /status`` returns)."""
    pools = {}
    for name, pv in sorted(snap.pools.items()):
        pools[name] = {
            "balance": pv.pool.balance,
            "version": pv.version,
            "servers": [
                {
                    "name": v.name,
                    "address": str(v.server.address),
                    "source": v.source,
                    "health": v.health.state.value,
                    "reason": v.health.reason,
                    "admin": v.admin.mode.label,
                    "admin_causes": [c.value for c in v.admin.causes],
                    "weight": v.weight,
                    "effective_weight": v.effective_weight,
                    "backup": v.server.backup,
                    "region": v.server.region,
                }
                for v in pv.servers
            ],
        }
    return {
        "version": snap.version,
        "pools": pools,
        "services": {
            n: {"pool": s.pool, "mode": s.mode, "listen": [str(e) for e in s.listen]}
            for n, s in sorted(snap.services.items())
        },
        "regions": {n: [str(p) for p in r.prefixes] for n, r in sorted(snap.regions.items())},
    }


def _status(rt: Runtime, req: Request) -> tuple[int, Any]:
    return 200, snapshot_json(rt.pool_state.snapshot)


def _set_admin(rt: Runtime, req: Request) -> tuple[int, Any]:
    body = req.json()
    mode = body.get("mode") if isinstance(body, dict) else None
    if mode is None and "mode" in req.query:
        mode = req.query["mode"][0]
    if mode not in ("ready", "drain", "maint"):
        return 400, {"error": "expected {\"mode\": \"ready\" | \"drain\" | \"maint\"}"}
    rt.pool_state.set_admin(req.params["pool"], req.params["server"], AdminMode[mode.upper()], AdminCause.API)
    return 200, {"pool": req.params["pool"], "server": req.params["server"], "mode": mode}


def _set_weight(rt: Runtime, req: Request) -> tuple[int, Any]:
    body = req.json()
    if not isinstance(body, dict) or "weight" not in body:
        return 400, {"error": "expected {\"weight\": N} (0..65535, or null for the declared weight)"}
    w = body["weight"]
    if w is not None and (isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 65535):
        return 400, {"error": "weight must be an integer 0..65535 or null"}
    rt.pool_state.set_weight(req.params["pool"], req.params["server"], w)
    return 200, {"pool": req.params["pool"], "server": req.params["server"], "weight": w}


add_route("GET", "/status", _status)
add_route("POST", "/pools/{pool}/servers/{server}/admin", _set_admin)
add_route("POST", "/pools/{pool}/servers/{server}/weight", _set_weight)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class ApiServer:
    """The ``[api]`` component: an asyncio HTTP server on ``listen``."""

    def __init__(self, runtime: Runtime, listen: Endpoint) -> None:
        self.name = f"api {listen}"
        self.runtime = runtime
        self.listen = listen
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen.host, self.listen.port,
                                                  reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, obj = await asyncio.wait_for(self._one(reader), 10)
        except TimeoutError:
            status, obj = 400, {"error": "request timed out"}
        except Exception as e:  # an API bug must not take the process down
            log.exception("api request failed")
            status, obj = 500, {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps(obj, indent=1).encode() + b"\n"
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        try:
            writer.write(head + data)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return 431, {"error": "request head too large"}
        except asyncio.IncompleteReadError:
            return 400, {"error": "incomplete request"}
        if len(head) > MAX_HEAD:
            return 431, {"error": "request head too large"}
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, {"error": "bad request line"}
        method, target, _ = parts
        length = 0
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                if k.strip().lower() == "content-length":
                    if not v.strip().isdigit():
                        return 400, {"error": "bad Content-Length"}
                    length = int(v.strip())
        if length > MAX_BODY:
            return 413, {"error": "body too large"}
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        path = unquote(url.path)
        allowed = []
        for m, rx, handler in _routes:
            match = rx.match(path)
            if not match:
                continue
            if m != method:
                allowed.append(m)
                continue
            req = Request(method, path, parse_qs(url.query), match.groupdict(), body)
            try:
                res = handler(self.runtime, req)
                if asyncio.iscoroutine(res):
                    res = await res
                return res  # type: ignore[return-value]
            except (UnknownPool, UnknownServer) as e:
                return 404, {"error": f"no such pool or server: {e.args[0]}"}
            except (ValueError, json.JSONDecodeError) as e:
                return 400, {"error": str(e)}
        if allowed:
            return 405, {"error": f"use {', '.join(allowed)}"}
        return 404, {"error": f"no route for {path}"}


register_section("api", Table({
    "listen": Field(Addr(), required=True, doc="address of the runtime API, e.g. 127.0.0.1:8404"),
}, what="the [api] table"))


def _factory(rt: Runtime) -> list[ApiServer]:
    sec = rt.config.section("api")
    if not sec:
        return []
    assert isinstance(sec, dict)
    return [ApiServer(rt, sec["listen"])]


register_component("api", _factory, order=10)
