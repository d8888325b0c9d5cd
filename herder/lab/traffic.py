"""Bounded traffic generators that run inside a lab node and report in JSON.

Two generators, both bounded in count and in time, both stdlib only:

* ``requests``: N HTTP requests, each on a new TCP connection (so each is a new flow
  for an L4 balancer), reporting which server answered each one (the body's first line,
  which herder's lab server sets to the node name) or the error.
* ``connections``: N long-lived TCP connections to an echo port, each sending a line
  every ``interval`` seconds for ``duration`` seconds, reporting every break: errors,
  resets, timeouts, EOF, and a switch to another server. A broken connection is
  reopened after ``interval`` (unless ``--no-reconnect``), so the report also shows when
  service came back and where.

Run them through :meth:`herder.lab.node.Node.requests` and
:meth:`~herder.lab.node.Node.connections`, or by hand in a node::

    herder lab exec client -- python3 -m herder.lab.traffic requests http://198.18.0.100/ --count 9
    herder lab exec client -- python3 -m herder.lab.traffic connections 198.18.0.100 9000 --count 4

The report (one JSON object on stdout) parses back with :func:`parse_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Break",
    "ConnectionSummary",
    "ConnectionsReport",
    "RequestResult",
    "RequestsReport",
    "parse_report",
    "run_connections",
    "run_requests",
]

#: Hard limits whatever the caller asks for: every loop ends.
MAX_COUNT = 100_000
MAX_DURATION_S = 600.0
MAX_CONNECTIONS = 1_000
MAX_RESPONSE = 64 * 1024


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One request: who answered (``server``) or why nothing did (``error``)."""

    index: int
    server: str | None
    status: int | None
    error: str | None
    latency_s: float
    source: str | None = None


@dataclass(slots=True)
class RequestsReport:
    """The outcome of :func:`run_requests`; ``counts`` is answers per server."""

    results: list[RequestResult]
    duration_s: float

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(r.server for r in self.results if r.server is not None))

    @property
    def errors(self) -> list[RequestResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def servers(self) -> list[str | None]:
        """The answering server of each request, in order (None for a failed one)."""
        return [r.server for r in self.results]


@dataclass(frozen=True, slots=True)
class Break:
    """A connection broke (``kind``: error, eof, timeout, switch) at ``t_s`` after the start."""

    conn: int
    t_s: float
    kind: str
    detail: str
    server: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionSummary:
    """One long-lived connection slot: every server it talked to, lines sent and answered."""

    conn: int
    servers: list[str]
    sent: int
    answered: int
    breaks: int


@dataclass(slots=True)
class ConnectionsReport:
    """The outcome of :func:`run_connections`."""

    connections: list[ConnectionSummary]
    breaks: list[Break] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def unbroken(self) -> bool:
        return not self.breaks


# --- requests ---------------------------------------------------------------------------

def _one_request(host: str, port: int, path: str, hostname: str, timeout: float, source: str | None) -> tuple[
        str | None, int | None]:
    with socket.create_connection((host, port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {hostname}\r\nUser-Agent: herder-lab\r\n"
                  f"Connection: close\r\n\r\n".encode())
        data = b""
        while len(data) < MAX_RESPONSE:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) >= 2 and status_line[1].isdigit() else None
    server = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"x-herder-node":
            server = v.strip().decode(errors="replace")
    if server is None and body:
        server = body.split(b"\n", 1)[0].strip().decode(errors="replace") or None
    return server, status


def run_requests(url: str, *, count: int, timeout: float = 1.0, interval: float = 0.0,
                 sources: list[str] | None = None, max_time: float | None = None) -> RequestsReport:
    """Send ``count`` requests to ``url`` one after another, each on a new connection.

    ``sources`` are bound round-robin as source addresses (they must exist in the node).
    Stops early when ``max_time`` (default ``count * (timeout + interval) + 1``) runs out;
    requests not sent are not reported.
    """
    count = min(count, MAX_COUNT)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    budget = min(max_time if max_time is not None else count * (timeout + interval) + 1.0, MAX_DURATION_S)
    start = time.monotonic()
    results: list[RequestResult] = []
    for i in range(count):
        if time.monotonic() - start > budget:
            break
        source = sources[i % len(sources)] if sources else None
        t0 = time.monotonic()
        try:
            server, status = _one_request(host, port, path, parts.netloc or host, timeout, source)
            error = None if server is not None else f"no server name in answer (status {status})"
        except OSError as e:
            server, status, error = None, None, f"{type(e).__name__}: {e}"
        results.append(RequestResult(i, server, status, error, round(time.monotonic() - t0, 6), source))
        if interval:
            time.sleep(interval)
    return RequestsReport(results, round(time.monotonic() - start, 6))


# --- long-lived connections ---------------------------------------------------------------

async def _slot(conn: int, host: str, port: int, duration: float, interval: float, timeout: float,
                reconnect: bool, t_start: float, breaks: list[Break]) -> ConnectionSummary:
    servers: list[str] = []
    sent = answered = nbreaks = 0
    deadline = t_start + duration
    loop = asyncio.get_running_loop()

    def note(kind: str, detail: str, server: str | None) -> None:
        nonlocal nbreaks
        nbreaks += 1
        breaks.append(Break(conn, round(loop.time() - t_start, 4), kind, detail, server))

    while loop.time() < deadline:
        current: str | None = None
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            while loop.time() < deadline:
                sent += 1
                writer.write(f"ping {conn} {sent}\n".encode())
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), timeout)
                if not line:
                    note("eof", "server closed the connection", current)
                    break
                who = line.decode(errors="replace").split(" ", 1)[0]
                answered += 1
                if current is None:
                    current = who
                    if not servers or servers[-1] != who:
                        servers.append(who)
                elif who != current:
                    note("switch", f"{current} -> {who}", who)
                    current = who
                    servers.append(who)
                await asyncio.sleep(interval)
            else:
                break  # duration over with the connection intact
        except TimeoutError:
            note("timeout", f"no answer within {timeout}s", current)
        except OSError as e:
            note("error", f"{type(e).__name__}: {e}", current)
        finally:
            if writer is not None:
                writer.close()
        if not reconnect:
            break
        await asyncio.sleep(interval)
    return ConnectionSummary(conn, servers, sent, answered, nbreaks)


async def _connections(host: str, port: int, count: int, duration: float, interval: float,
                       timeout: float, reconnect: bool) -> ConnectionsReport:
    breaks: list[Break] = []
    t_start = asyncio.get_running_loop().time()
    slots = await asyncio.gather(*(
        _slot(i, host, port, duration, interval, timeout, reconnect, t_start, breaks) for i in range(count)))
    breaks.sort(key=lambda b: b.t_s)
    return ConnectionsReport(list(slots), breaks, round(asyncio.get_running_loop().time() - t_start, 4))


def run_connections(host: str, port: int, *, count: int = 4, duration: float = 2.0, interval: float = 0.05,
                    timeout: float = 1.0, reconnect: bool = True) -> ConnectionsReport:
    """Hold ``count`` echo connections to ``host:port`` for ``duration`` s; report breaks.

    Each connection sends a line every ``interval`` s and waits up to ``timeout`` s for
    the answer. Bounded: at most :data:`MAX_CONNECTIONS` connections and
    :data:`MAX_DURATION_S` seconds (plus one ``timeout``).
    """
    count = max(1, min(count, MAX_CONNECTIONS))
    duration = min(duration, MAX_DURATION_S)
    interval = max(interval, 0.001)
    return asyncio.run(_connections(host, port, count, duration, interval, timeout, reconnect))


# --- JSON --------------------------------------------------------------------------------

def report_json(report: RequestsReport | ConnectionsReport) -> str:
    """The report as one JSON object (``kind`` says which generator made it)."""
    if isinstance(report, RequestsReport):
        return json.dumps({"kind": "requests", "duration_s": report.duration_s,
                           "counts": report.counts, "results": [asdict(r) for r in report.results]})
    return json.dumps({"kind": "connections", "duration_s": report.duration_s,
                       "connections": [asdict(c) for c in report.connections],
                       "breaks": [asdict(b) for b in report.breaks]})


def parse_report(text: str) -> RequestsReport | ConnectionsReport:
    """Parse the JSON a generator printed back into its report object."""
    data: dict[str, Any] = json.loads(text)
    if data.get("kind") == "requests":
        return RequestsReport([RequestResult(**r) for r in data["results"]], data["duration_s"])
    if data.get("kind") == "connections":
        return ConnectionsReport([ConnectionSummary(**c) for c in data["connections"]],
                                 [Break(**b) for b in data["breaks"]], data["duration_s"])
    raise ValueError(f"not a traffic report: {text[:80]!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m herder.lab.traffic",
                                description="Bounded traffic generators for lab nodes (JSON report on stdout).")
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("requests", help="N HTTP requests, each on a new connection")
    r.add_argument("url")
    r.add_argument("--count", type=int, default=10)
    r.add_argument("--timeout", type=float, default=1.0)
    r.add_argument("--interval", type=float, default=0.0)
    r.add_argument("--source", action="append", default=[], help="source address (repeat to rotate)")
    r.add_argument("--max-time", type=float, default=None)
    c = sub.add_parser("connections", help="long-lived echo connections, reporting every break")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--count", type=int, default=4)
    c.add_argument("--duration", type=float, default=2.0)
    c.add_argument("--interval", type=float, default=0.05)
    c.add_argument("--timeout", type=float, default=1.0)
    c.add_argument("--no-reconnect", action="store_true")
    args = p.parse_args(argv)
    report: RequestsReport | ConnectionsReport
    if args.mode == "requests":
        report = run_requests(args.url, count=args.count, timeout=args.timeout, interval=args.interval,
                              sources=args.source or None, max_time=args.max_time)
    else:
        report = run_connections(args.host, args.port, count=args.count, duration=args.duration,
                                 interval=args.interval, timeout=args.timeout, reconnect=not args.no_reconnect)
    sys.stdout.write(report_json(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
