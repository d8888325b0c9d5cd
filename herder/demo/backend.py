"""A tiny HTTP/1.1 server for demos and tests: answers every request with its own name.

Run as ``python -m herder.demo.backend --port 18081 --name web1``. Paths:

* ``/health`` and ``/index.html`` -- 200, or the status written in ``--status-file`` (so a
  test can make a server fail its health checks without stopping it);
* ``/echo...`` -- a JSON body with the name, method, path, headers and body size received
  (what a proxy did to the request);
* ``/setcookie...`` -- sets ``JSESSIONID=xyz`` (an application session cookie);
* anything else -- ``<name>\\n``.

Every response carries ``X-Served-By: <name>``. Keep-alive is supported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal


class _Backend(asyncio.Protocol):
    def __init__(self, name: bytes, health_status: int, status_file: str | None = None) -> None:
        self.name = name
        self.health_status = health_status
        self.status_file = status_file
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
            headers = []
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers.append([k, v.strip()])
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
            extra = b""
            if path in ("/health", "/index.html"):
                status = self.current_health()
                body = b"ok\n" if status == 200 else b"unhealthy\n"
            elif path.startswith("/echo"):
                status = 200
                body = json.dumps({"name": self.name.decode(), "method": method, "path": path,
                                   "headers": headers, "body_length": length}).encode()
            else:
                status, body = 200, self.name + b"\n"
                if path.startswith("/setcookie"):
                    extra = b"Set-Cookie: JSESSIONID=xyz; path=/\r\n"
            reason = b"OK" if status == 200 else b"Error"
            resp = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-Served-By: %s\r\n%s%s\r\n"
                    % (status, reason, len(body), self.name, extra, b"Connection: close\r\n" if close else b""))
            assert self.transport is not None
            self.transport.write(resp + (b"" if method == "HEAD" else body))
            if close:
                self.transport.close()
                return

    def current_health(self) -> int:
        if self.status_file:
            try:
                with open(self.status_file) as f:
                    return int(f.read().strip() or 200)
            except (OSError, ValueError):
                return 200
        return self.health_status


async def serve(host: str, port: int, name: str, health_status: int = 200,
                status_file: str | None = None) -> asyncio.Server:
    """Start a backend in the running loop and return its server (port 0 picks a port)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Backend(name.encode(), health_status, status_file), host, port,
                                    reuse_address=True)


async def _main(args: argparse.Namespace) -> None:
    server = await serve(args.host, args.port, args.name, args.health_status, args.status_file)
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
    p.add_argument("--status-file", help="file holding the status /health and /index.html answer")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
