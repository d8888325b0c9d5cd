"""A tiny server that answers with the node's name: HTTP and a line echo, for lab nodes.

Run inside a node (the lab does this for ``serve = {...}`` in a topology and for
:meth:`herder.lab.node.Node.serve_http`)::

    python -m herder.lab.serve --name rs1 --lab flat --http 80 --echo 9000

* HTTP (any method, any path): ``200``, body ``<name>\\n``; headers ``X-Herder-Node``
  (the name), ``X-Herder-Lab`` and ``X-Herder-Peer`` (the client address and port as
  this server saw it, which shows whether a director NATed the source). Keep-alive is
  honoured, so one connection may carry several requests.
* Echo (TCP): every line received is answered with ``<name> <line>``, for long-lived
  connections that must notice when they land on another server.

Bounded: request heads over 16 KiB and bodies over 1 MiB are refused; idle connections
are closed after 60 s. Logs go to stderr (the lab writes them to the node's log file).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
IDLE_S = 60.0


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, lab: str) -> None:
    peer = _peer(writer)
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_S)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            request = lines[0].split()
            headers = {}
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if sep:
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length > MAX_BODY or len(request) != 3:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            if length:
                await reader.readexactly(length)
            version = request[2]
            conn = headers.get("connection", "").lower()
            close = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
            body = f"{name}\n".encode()
            writer.write(
                (
                    f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                    f"X-Herder-Node: {name}\r\nX-Herder-Lab: {lab}\r\nX-Herder-Peer: {peer}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
                ).encode()
                + (b"" if request[0] == "HEAD" else body)
            )
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
    prefix = f"{name} ".encode()
    try:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), IDLE_S)
            except (TimeoutError, ValueError):
                return
            if not line:
                return
            writer.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()


async def serve(name: str, lab: str, http: list[int], echo: list[int], bind: str) -> None:
    """Listen on every port, then run until cancelled or SIGTERM/SIGINT."""
    servers = []
    for port in http:
        servers.append(await asyncio.start_server(
            lambda r, w: _http(r, w, name, lab), bind, port, reuse_address=True, limit=MAX_HEAD))
    for port in echo:
        servers.append(await asyncio.start_server(
            lambda r, w: _echo(r, w, name), bind, port, reuse_address=True, limit=MAX_HEAD))
    log.info("%s: http %s echo %s on %s", name, http, echo, bind)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m herder.lab.serve", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="the name every answer carries")
    p.add_argument("--lab", default="", help="lab name, sent as X-Herder-Lab")
    p.add_argument("--http", type=int, action="append", default=[], metavar="PORT")
    p.add_argument("--echo", type=int, action="append", default=[], metavar="PORT")
    p.add_argument("--bind", default="0.0.0.0")
    args = p.parse_args(argv)
    if not args.http and not args.echo:
        p.error("give --http and/or --echo")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(serve(args.name, args.lab, args.http, args.echo, args.bind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
