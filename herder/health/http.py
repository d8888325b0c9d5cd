"""HTTP check: a request, an expected status (or range) and optionally a body substring.

HAProxy's ``option httpchk`` / ``http-check send`` / ``http-check expect``, keepalived's
``HTTP_GET``, Envoy's HTTP health checker. Config::

    [[pools.web.checks]]
    type = "http"
    method = "GET"            # HAProxy: option httpchk GET /health HTTP/1.1
    path = "/health"
    host = "www.example.test" # HAProxy: http-check send hdr Host www.example.test
    version = "1.1"           # "1.0" or "1.1"
    expect_status = "200-399" # 200, "2xx", "200-399" or a list of them
    expect_body = "ok"        # HAProxy: http-check expect string ok

Results: ``L7 status 200`` (passed), ``L7 status 500`` (wrong status), ``L7 body mismatch``,
``L7 timeout`` (connected, no complete answer in time), ``L4 timeout`` / ``L4 connection
refused`` (no connection), ``L7 invalid response: ...`` (not HTTP).

The request always asks the server to close the connection; the check reads the head,
then the body only when ``expect_body`` needs it (at most 16 KiB, HAProxy's
``tune.chksize``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from herder.config.schema import Field, MapOf, Spec, Str
from herder.health.base import ProbeResult, Target, check_table, register_probe
from herder.health.classify import (
    StatusRanges,
    connect_failure,
    http_request,
    http_result,
    parse_status_expect,
    response_complete,
    timeout_result,
)
from herder.health.tcp import connect

__all__ = ["HttpProbe"]

log = logging.getLogger(__name__)

DEFAULT_EXPECT: StatusRanges = ((200, 399),)


class _Exchange(asyncio.Protocol):
    """One request, one response; ``done`` resolves to True at EOF, False when complete."""

    def __init__(self, request: bytes, head_only: bool, done: asyncio.Future) -> None:
        self.request = request
        self.head_only = head_only
        self.done = done
        self.buf = b""
        self.error: OSError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.done.done():
            return
        try:
            complete = response_complete(self.buf, self.head_only)
        except ValueError:
            complete = True  # http_result reports why
        if complete:
            self.done.set_result(False)

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError):
            self.error = exc
        if not self.done.done():
            self.done.set_result(True)


class HttpProbe:
    """Send one request; classify the answer (see the module docstring)."""

    kind = "http"

    def __init__(self, timeout: float, *, method: str = "GET", path: str = "/", version: str = "1.1",
                 host: str | None = None, headers: tuple[tuple[str, str], ...] = (), body: str | None = None,
                 expect_status: StatusRanges = DEFAULT_EXPECT, expect_body: str | None = None) -> None:
        self.timeout = timeout
        self.method = method
        self.path = path
        self.version = version
        self.host = host
        self.headers = headers
        self.body = body
        self.expect_status = expect_status
        self.expect_body = expect_body
        self._request_cache: dict[str, bytes] = {}

    def request(self, target: Target) -> bytes:
        """The request bytes for ``target`` (HTTP/1.1 defaults Host to the checked address)."""
        key = str(target.address)
        req = self._request_cache.get(key)
        if req is None:
            host = self.host if self.host is not None else (key if self.version == "1.1" else None)
            req = http_request(self.method, self.path, self.version, host, self.headers, self.body)
            if len(self._request_cache) < 4096:
                self._request_cache[key] = req
        return req

    async def check(self, target: Target) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.timeout
        done: asyncio.Future = loop.create_future()
        head_only = self.method == "HEAD" or self.expect_body is None
        proto = _Exchange(self.request(target), head_only, done)
        try:
            transport, _ = await connect(target, lambda: proto, deadline)
        except TimeoutError:
            return timeout_result(connected=False).with_duration(loop.time() - start)
        except OSError as e:
            return connect_failure(e).with_duration(loop.time() - start)
        try:
            async with asyncio.timeout_at(deadline):
                eof = await done
        except TimeoutError:
            return timeout_result(connected=True).with_duration(loop.time() - start)
        finally:
            transport.close()
        if eof and not proto.buf and proto.error is not None:
            return connect_failure(proto.error).with_duration(loop.time() - start)
        return http_result(proto.buf, self.expect_status, self.expect_body, eof=eof).with_duration(
            loop.time() - start)


class _StatusSpec(Spec):
    expected = 'an HTTP status or range: 200, "2xx", "200-399", or an array of them'

    def parse(self, value, path, ctx):
        try:
            return parse_status_expect(value)
        except ValueError as e:
            return self.bad(value, path, ctx, str(e))


def _build(v: dict, path, ctx) -> dict:
    # Normalised here so that the parsed check is plain immutable data.
    v["version"] = str(v["version"]).removeprefix("HTTP/")
    if v["headers"] is not None:
        v["headers"] = tuple(sorted(v["headers"].items()))
    return v


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"

TABLE = check_table("http", {
    "method": Field(Str(pattern=r"[A-Z]+", what="an HTTP method in capitals (GET, HEAD, OPTIONS...)"),
                    default="GET"),
    "path": Field(Str(pattern=r"[/*]\S*", what='a request target starting with "/"'), default="/"),
    "host": Field(Str(pattern=r"\S+", what="a Host header value"),
                  doc="Host header (HTTP/1.1 default: the checked address)"),
    "version": Field(Str(choices=("1.0", "1.1", "HTTP/1.0", "HTTP/1.1")), default="1.1"),
    "headers": Field(MapOf(Str(nonempty=False, pattern=r"[^\r\n]*"), name_pattern=_TOKEN),
                     doc="extra request headers"),
    "body": Field(Str(nonempty=False), doc="request body"),
    "expect_status": Field(_StatusSpec(), default=DEFAULT_EXPECT),
    "expect_body": Field(Str(), doc="a substring the response body must contain"),
}, build=_build)


def _factory(spec: Mapping[str, object], timeout: float) -> HttpProbe:
    version = str(spec.get("version") or "1.1").removeprefix("HTTP/")
    headers = spec.get("headers") or ()
    if isinstance(headers, Mapping):
        headers = tuple(headers.items())
    return HttpProbe(
        timeout,
        method=str(spec.get("method") or "GET"),
        path=str(spec.get("path") or "/"),
        version=version,
        host=spec.get("host"),  # type: ignore[arg-type]
        headers=tuple((str(k), str(v)) for k, v in headers),  # type: ignore[union-attr]
        body=spec.get("body"),  # type: ignore[arg-type]
        expect_status=spec.get("expect_status") or DEFAULT_EXPECT,  # type: ignore[arg-type]
        expect_body=spec.get("expect_body"),  # type: ignore[arg-type]
    )


register_probe("http", TABLE, _factory)
