"""A tiny HTTP/1.1 server for demos and tests: answers every request with its own name.

Run as ``python -m herder.demo.backend --port 18081 --name web1``. ``GET /health`` answers
200 (or what ``--health-status`` says); every other path answers ``<name>\\n`` with
``X-Served-By: <name>``. Keep-alive is supported; request bodies (Content-Length) are read
and ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import signal


class _Backend(asyncio.Protocol):
    def __init__(self, name: bytes, health_status: int) -> None:
        self.name = name
        self.health_status = health_status
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    assert self.transport is not None
                    self.transport.close()
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            close = lines[0].endswith("HTTP/1.0")
            for line in lines[1:]:
                k, _, v = line.partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v.strip() or 0)
                elif k == "connection":
                    close = v.strip().lower() == "close" or (close and v.strip().lower() != "keep-alive")
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            parts = lines[0].split(" ")
            method = parts[0]
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/health":
                status, body = self.health_status, b"ok\n" if self.health_status == 200 else b"unhealthy\n"
            else:
                status, body = 200, self.name + b"\n"
            reason = b"OK" if status == 200 else b"Error"
            resp = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-Served-By: %s\r\n%s\r\n"
                    % (status, reason, len(body), self.name, b"Connection: close\r\n" if close else b""))
            assert self.transport is not None
            self.transport.write(resp + (b"" if method == "HEAD" else body))
            if close:
                self.transport.close()
                return


async def serve(host: str, port: int, name: str, health_status: int = 200) -> asyncio.Server:
    """Start a backend in the running loop and return its server (port 0 picks a port)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Backend(name.encode(), health_status), host, port,
                                    reuse_address=True)


async def _main(args: argparse.Namespace) -> None:
    server = await serve(args.host, args.port, args.name, args.health_status)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    p = argparse.ArgumentParser(description="tiny HTTP backend that answers with its name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--health-status", type=int, default=200)
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
