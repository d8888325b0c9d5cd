"""The proxy's request path over fake transports, in both of its forms.

``herder/l7/proxy.py`` runs as plain Python, and is also compiled when the optional extension
is built (setup.py, proxy.pxd). Both must behave the same: the same bytes reach the server
and the client. The integration tests drive whichever form is installed; these drive both.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

import herder.l7.proxy as installed
from herder.l7.core.cookie import CookiePolicy
from herder.pool.model import Endpoint, Pool, Server
from herder.pool.state import PoolState

pytestmark = pytest.mark.unit

SOURCE = Path(installed.__file__).with_name("proxy.py")


def _plain():
    spec = importlib.util.spec_from_file_location("herder.l7._proxy_plain", SOURCE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


PLAIN = _plain()
FORMS = [pytest.param(PLAIN, id="plain")]
if installed.COMPILED:
    FORMS.append(pytest.param(installed, id="compiled"))


class Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, key: str):
        return ("198.18.0.7", 5555) if key == "peername" else None

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")


def proxy_with_idle_servers(mod):
    ps = PoolState()
    ps.load([Pool("be", tuple(Server(f"s{i}", Endpoint("127.0.0.1", 18181 + i), meta={"cookie": "ABC"[i]})
                              for i in range(3)))])
    pool = mod.PoolSettings(cookie=CookiePolicy(b"SRV", "insert", indirect=True, nocache=True), forwardfor=True)
    proxy = mod.HttpProxy("t", mod.ProxySettings(listen=(), pool="be", pools={"be": pool}), ps)
    sub = ps.subscribe(proxy.on_snapshot)
    backend = proxy.backends["be"]
    ups = {}
    for name, slot in backend.slots.items():
        up = mod.ServerConnection(proxy, backend, slot.address, name)
        up.transport = Transport()
        slot.idle.append(up)
        ups[name] = up
    return proxy, ups, sub


def exchange(mod, requests: list[bytes], close_each: bool = False):
    """Send each request on a client connection, answer it from whichever server got it;
    return (server name, bytes the server got) per request and everything the client got."""

    async def run():
        proxy, ups, sub = proxy_with_idle_servers(mod)
        seen, client_out = [], []
        client = ct = None
        for raw in requests:
            if client is None:
                client, ct = mod.ClientConnection(proxy), Transport()
                client.connection_made(ct)
            client.data_received(raw)
            up = client.upstream
            assert up is not None, b"".join(ct.out)
            seen.append((up.name, b"".join(up.transport.out)))
            up.transport.out.clear()
            up.data_received(RESPONSE)
            client_out.append(b"".join(ct.out))
            ct.out.clear()
            if ct.closed or close_each:
                client.connection_lost(None)
                client = None
        sub.close()
        return seen, client_out

    return asyncio.run(run())


GET = b"GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize("mod", FORMS)
def test_keep_alive_requests_rotate_and_are_rewritten_as_expected(mod):
    seen, out = exchange(mod, [GET, GET, GET, GET])
    assert [name for name, _ in seen] == ["s0", "s1", "s2", "s0"]
    assert seen[0][1] == (b"GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nUser-Agent: t\r\nAccept: */*\r\n"
                          b"X-Forwarded-For: 198.18.0.7\r\n\r\n")
    assert out[0] == (b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 3\r\nSet-Cookie: SRV=A; path=/\r\n"
                      b"Cache-Control: private\r\n\r\nok\n")
    assert out[1].count(b"SRV=B") == 1 and out[2].count(b"SRV=C") == 1


@pytest.mark.parametrize("mod", FORMS)
def test_sticky_cookie_is_stripped_and_not_set_again(mod):
    req = GET.replace(b"Accept: */*\r\n", b"Accept: */*\r\nCookie: SRV=C; other=1\r\n")
    seen, out = exchange(mod, [req, req])
    assert [name for name, _ in seen] == ["s2", "s2"]
    assert b"Cookie: other=1\r\n" in seen[0][1] and b"SRV" not in seen[0][1]
    assert b"Set-Cookie" not in out[0] and out[0].endswith(b"\r\n\r\nok\n")


@pytest.mark.parametrize("mod", FORMS)
def test_close_and_http10_answers(mod):
    close = GET.replace(b"Accept: */*\r\n", b"Accept: */*\r\nConnection: close\r\n")
    seen, out = exchange(mod, [close, b"GET /x HTTP/1.0\r\n\r\n",
                               b"GET /y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"], close_each=True)
    assert b"Connection: close\r\n" in out[0] and b"Connection: close\r\n" in out[1]
    assert b"Connection: keep-alive\r\n" in out[2]
    assert seen[1][1].startswith(b"GET /x HTTP/1.1\r\n") and b"Connection" not in seen[0][1]


def test_both_forms_send_the_same_bytes():
    if not installed.COMPILED:
        pytest.skip("the compiled extension is not built here (setup.py needs Cython and a C compiler)")
    reqs = [GET, GET.replace(b"Accept: */*\r\n", b"Cookie: SRV=B\r\n"), b"GET /x HTTP/1.0\r\n\r\n"]
    assert exchange(PLAIN, reqs) == exchange(installed, reqs)


def test_the_pxd_declares_every_attribute_the_compiled_classes_set():
    """A compiled class cannot grow attributes: each ``self.X = ...`` in a class that
    proxy.pxd declares must be declared there (checked on the source, compiled or not)."""
    import ast
    import re

    pxd = SOURCE.with_name("proxy.pxd").read_text()
    declared: dict[str, set[str]] = {}
    current = None
    for line in pxd.splitlines():
        m = re.match(r"cdef class (\w+):", line)
        if m:
            current = declared.setdefault(m.group(1), set())
            continue
        m = re.match(r"\s+cdef public \w+ (\w+)$", line)
        if m and current is not None:
            current.add(m.group(1))
    assert {"Request", "ClientConnection", "ServerConnection", "Backend", "_Slot"} <= declared.keys()
    tree = ast.parse(SOURCE.read_text())
    missing = []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef) or cls.name not in declared:
            continue
        for node in ast.walk(cls):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            for t in targets:
                for el in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(el, ast.Attribute) and isinstance(el.value, ast.Name) and el.value.id == "self" \
                            and el.attr not in declared[cls.name]:
                        missing.append(f"{cls.name}.{el.attr} (line {el.lineno})")
    assert not missing, "set in proxy.py but not declared in proxy.pxd: " + ", ".join(sorted(set(missing)))
