"""Health and discovery through the real runtime: a TOML file, load_files, Runtime, the API.

The configuration is loaded exactly as ``herder run`` loads it; the test watches the pool
state and the runtime API's ``GET /status`` and ``GET /health`` react to backends
changing behind it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from herder.config import load_files
from herder.health.engine import checker_for
from herder.runtime import Runtime

pytestmark = pytest.mark.integration


class Http:
    """A backend answering every request with ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok" % self.status)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_get(port: int, path: str) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


async def until(pred, timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


CONFIG = """\
[api]
listen = "127.0.0.1:{api}"

[pools.web]
initial_state = "down"

[[pools.web.servers]]
name = "s1"
address = "127.0.0.1:{p1}"

[[pools.web.checks]]
type = "http"
path = "/health"
inter = "100ms"
rise = 2
fall = 2
timeout = "500ms"

[pools.web.passive]
error_limit = 3
max_ejected_percent = 50

[[pools.web.discovery]]
type = "file"
path = "servers.json"
interval = "50ms"
"""


def test_runtime_runs_checks_and_discovery_from_a_toml_file(tmp_path: Path):
    async def main():
        b1, b2 = Http(), Http()
        p1, p2 = await b1.start(), await b2.start()
        api = free_port()
        cfg_file = tmp_path / "herder.toml"
        cfg_file.write_text(CONFIG.format(api=api, p1=p1))
        (tmp_path / "servers.json").write_text(json.dumps([{"name": "f1", "address": f"127.0.0.1:{p2}"}]))
        rt = Runtime(load_files([str(cfg_file)]))
        await rt.start()
        try:
            def state(name):
                v = rt.pool_state.snapshot.pool("web").server(name)
                return None if v is None else (v.health.state.value, v.health.reason)

            # the discovered server is in the pool before any check ran
            assert state("f1") is not None
            await until(lambda: state("s1") == ("up", "L7 status 200") and state("f1") == ("up", "L7 status 200"))

            b1.status = 503
            await until(lambda: state("s1") == ("down", "L7 status 503"))

            # a server added to the file is checked too; a refused port gives its reason
            dead = free_port()
            (tmp_path / "servers.json").write_text(json.dumps([
                {"name": "f1", "address": f"127.0.0.1:{p2}"}, {"name": "f2", "address": f"127.0.0.1:{dead}"}]))
            await until(lambda: state("f2") == ("down", "L4 connection refused"))

            # passive errors reported by a data plane eject f1 until the checks bring it back
            checker = checker_for(rt)
            assert checker is not None
            for _ in range(3):
                checker.observe("web", "f1", False, "http_5xx")
            assert state("f1") == ("down", "passive: 3 consecutive errors (last: http_5xx)")
            await until(lambda: state("f1") == ("up", "L7 status 200"))

            status = await http_get(api, "/status")
            servers = {s["name"]: s for s in status["pools"]["web"]["servers"]}
            assert servers["s1"]["reason"] == "L7 status 503" and servers["f2"]["source"].startswith("file:")
            health = await http_get(api, "/health")
            assert health["web"]["s1"]["checks"][0]["layer"] == "L7STS"
            assert health["web"]["s1"]["checks"][0]["status"] == "DOWN"

            b1.status = 200
            await until(lambda: state("s1") == ("up", "L7 status 200"))
        finally:
            await rt.stop()
            await b1.stop()
            await b2.stop()
        # every check task is gone with the runtime
        leftover = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("health ")]
        assert leftover == []

    asyncio.run(main())


def test_reload_adds_checks_and_removes_discovery(tmp_path: Path):
    """SIGHUP-style reload: a pool gains a check (its servers get checked) and loses its
    discovery table (the file's servers leave the pool)."""

    async def main():
        b1 = Http()
        p1 = await b1.start()
        cfg_file = tmp_path / "herder.toml"
        (tmp_path / "servers.json").write_text(json.dumps([{"name": "f1", "address": f"127.0.0.1:{p1}"}]))
        cfg_file.write_text(f'[pools.web]\n[[pools.web.servers]]\nname = "s1"\naddress = "127.0.0.1:{free_port()}"\n'
                            '[[pools.web.discovery]]\ntype = "file"\npath = "servers.json"\ninterval = 0.05\n')
        rt = Runtime(load_files([str(cfg_file)]))
        await rt.start()
        try:
            pool = lambda: rt.pool_state.snapshot.pool("web")  # noqa: E731
            assert {v.name for v in pool().servers} == {"s1", "f1"}
            assert pool().server("s1").health.reason == "no check configured"
            cfg_file.write_text(f'[pools.web]\n[[pools.web.servers]]\nname = "s1"\n'
                                f'address = "127.0.0.1:{free_port()}"\n'
                                '[[pools.web.checks]]\ntype = "tcp"\ninter = 0.05\nfall = 1\n')
            assert rt.reload()
            await until(lambda: {v.name for v in pool().servers} == {"s1"})
            await until(lambda: pool().server("s1").health.reason == "L4 connection refused")
        finally:
            await rt.stop()
            await b1.stop()

    asyncio.run(main())
