"""The L7 proxy's own Python cost per request, without sockets (a developer's tool).

``python -m bench.l7_hotpath [--plain] [N]`` drives a ClientConnection and an idle ServerConnection
over fake transports: one keep-alive GET in, one small response back, N times, and prints
the microseconds per request (min of 3 runs), with and without cookie persistence, and with
one client connection per request (``Connection: close``). ``--plain`` measures the plain
Python source of herder/l7/proxy.py even when its compiled form is installed. The
kernel's share (two send() and two recv() per request) is not in it, which is what makes
it repeatable enough to compare two versions of the hot path in one sitting. It is not
part of ``make bench``: it has no anchor (haproxy's whole request, system calls included,
is about 14 us per core on this machine kind).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from herder.l7.core.cookie import CookiePolicy
from herder.l7.proxy import ClientConnection, HttpProxy, PoolSettings, ProxySettings, ServerConnection
from herder.pool.model import Endpoint, Pool, Server
from herder.pool.state import PoolState

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18100\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
CLOSE_REQUEST = REQUEST[:-2] + b"Connection: close\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 13:00:00 GMT\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if len(self.out) > 64:
            del self.out[:-1]

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, key: str):
        return ("127.0.0.1", 5555) if key == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True


async def per_request_us(n: int, cookie: bool, close: bool = False) -> float:
    ps = PoolState()
    servers = tuple(Server(f"s{i}", Endpoint("127.0.0.1", 18181 + i), meta={"cookie": "ABC"[i]}) for i in range(3))
    ps.load([Pool("be", servers)])
    pool = PoolSettings(cookie=CookiePolicy(b"SRV", "insert", indirect=True, nocache=True) if cookie else None,
                        forwardfor=True)
    proxy = HttpProxy("bench", ProxySettings(listen=(), pool="be", pools={"be": pool}, forwardfor=True), ps)
    sub = ps.subscribe(proxy.on_snapshot)
    backend = proxy.backends["be"]
    assert backend.view is not None
    for v in backend.view.servers:
        up = ServerConnection(proxy, backend, v.server.address, v.name)
        up.transport = _Transport()  # type: ignore[assignment]
        backend.slots[v.name].idle.append(up)
    if close:
        # one client connection per request, as wrk -H 'Connection: close' makes them
        t0 = time.perf_counter()
        for _ in range(n):
            client = ClientConnection(proxy)
            ct = _Transport()
            client.connection_made(ct)  # type: ignore[arg-type]
            client.data_received(CLOSE_REQUEST)
            upstream = client.upstream
            assert upstream is not None
            upstream.data_received(RESPONSE)
            assert ct.closing
            client.connection_lost(None)
        dt = time.perf_counter() - t0
    else:
        client = ClientConnection(proxy)
        ct = _Transport()
        client.connection_made(ct)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for _ in range(n):
            client.data_received(REQUEST)
            upstream = client.upstream
            assert upstream is not None
            upstream.data_received(RESPONSE)
        dt = time.perf_counter() - t0
    sub.close()
    assert ct.out[-1].endswith(b"ok\n")
    return dt / n * 1e6


def _plain_module():
    """herder/l7/proxy.py loaded from its source, even when the compiled extension exists."""
    import importlib.util

    import herder.l7.proxy as installed

    spec = importlib.util.spec_from_file_location("herder.l7._proxy_plain", Path(installed.__file__).with_name("proxy.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str]) -> int:
    global ClientConnection, HttpProxy, PoolSettings, ProxySettings, ServerConnection
    import herder.l7.proxy as mod

    if "--plain" in argv:
        argv = [a for a in argv if a != "--plain"]
        mod = _plain_module()
        ClientConnection, HttpProxy, PoolSettings, ProxySettings, ServerConnection = (
            mod.ClientConnection, mod.HttpProxy, mod.PoolSettings, mod.ProxySettings, mod.ServerConnection)
    print(f"herder/l7/proxy: {'compiled' if mod.COMPILED else 'plain Python'}")
    n = int(argv[0]) if argv else 30000
    for close, cookie in ((False, False), (False, True), (True, True)):
        runs = [asyncio.run(per_request_us(n, cookie, close)) for _ in range(3)]
        mode = "close     " if close else "keep-alive"
        print(f"{mode} cookie insert {'on ' if cookie else 'off'}: {min(runs):.2f} us per request (min of 3 x {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
