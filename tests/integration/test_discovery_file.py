"""File discovery, live: edits add and remove servers; a malformed edit keeps the old set."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from herder.config.load import load_text
from herder.discovery.engine import DiscoveryManager
from herder.pool.state import PoolState

pytestmark = pytest.mark.integration


async def until(pred, timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def setup(tmp_path: Path, name: str, content: str, fmt_extra: str = "") -> tuple[PoolState, DiscoveryManager, Path]:
    path = tmp_path / name
    path.write_text(content)
    frag = load_text(str(tmp_path / "herder.toml"),
                     f'[pools.web]\n[[pools.web.discovery]]\ntype = "file"\npath = "{name}"\n'
                     f'interval = "20ms"\n{fmt_extra}')
    assert frag.ctx.errors == [], [str(e) for e in frag.ctx.errors]
    state = PoolState()
    state.load(frag.pools.values())
    return state, DiscoveryManager(state), path


def names(state: PoolState) -> dict[str, str]:
    return {v.name: str(v.server.address) for v in state.snapshot.pool("web").servers}


def write(path: Path, text: str) -> None:
    # a new mtime even on file systems with coarse timestamps
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_json_edits_apply_live_and_malformed_edits_keep_the_old_set(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="herder.discovery")
    one = [{"name": "web1", "address": "127.0.0.1:8081"}, {"name": "web2", "address": "127.0.0.1:8082"}]

    async def main():
        state, mgr, path = setup(tmp_path, "servers.json", json.dumps(one))
        await mgr.start()
        # the first read happened before start() returned
        assert names(state) == {"web1": "127.0.0.1:8081", "web2": "127.0.0.1:8082"}

        # remove web1, add web3, change web2's port
        write(path, json.dumps([{"name": "web2", "address": "127.0.0.1:9082"},
                                {"name": "web3", "address": "127.0.0.1:8083", "weight": 5}]))
        await until(lambda: set(names(state)) == {"web2", "web3"})
        assert names(state)["web2"] == "127.0.0.1:9082"
        assert state.snapshot.pool("web").server("web3").weight == 5

        # a malformed edit: rejected, with file:line and key, and the set stays
        write(path, '[\n  {"name": "web2", "address": "127.0.0.1:9082"},\n  {"name": "web4",\n'
                    '   "address": "127.0.0.1:99999"}\n]\n')
        await until(lambda: any("edit rejected" in r.message for r in caplog.records))
        assert set(names(state)) == {"web2", "web3"}

        # a syntax error too
        write(path, '[{"name": "web5", "address": ')
        await until(lambda: sum("edit rejected" in r.message for r in caplog.records) >= 2)
        assert set(names(state)) == {"web2", "web3"}

        # the file disappears: the set stays, a warning says so
        path.unlink()
        await until(lambda: any("cannot read" in r.message for r in caplog.records))
        assert set(names(state)) == {"web2", "web3"}

        # a good file again applies
        write(path, json.dumps([{"name": "web4", "address": "127.0.0.1:8084"}]))
        await until(lambda: set(names(state)) == {"web4"})
        await mgr.stop()

    asyncio.run(main())
    rejected = [r.getMessage() for r in caplog.records if "edit rejected" in r.getMessage()]
    assert rejected[0].startswith(f"pool web: discovery file:{tmp_path}/servers.json: edit rejected, "
                                  "keeping the last 2 server(s): ")
    assert f"{tmp_path}/servers.json:4: [1].address: expected an address" in rejected[0]
    assert "port 99999 is outside 1..65535" in rejected[0]
    assert f"{tmp_path}/servers.json:1: JSON syntax error" in rejected[1]
    assert all(r.levelno == logging.ERROR for r in caplog.records if "edit rejected" in r.getMessage())


def test_toml_file_and_empty_set(tmp_path):
    async def main():
        state, mgr, path = setup(tmp_path, "servers.toml",
                                 '[[servers]]\nname = "a"\naddress = "127.0.0.1:1"\n'
                                 '[[servers]]\nname = "b"\naddress = "127.0.0.1:2"\nadmin = "drain"\n')
        await mgr.start()
        assert set(names(state)) == {"a", "b"}
        assert state.snapshot.pool("web").server("b").admin.describe() == "drain (discovery)"
        write(path, "")  # a truncated write: rejected, the set stays
        await asyncio.sleep(0.2)
        assert set(names(state)) == {"a", "b"}
        write(path, "servers = []\n")  # a deliberate empty set
        await until(lambda: names(state) == {})
        await mgr.stop()

    asyncio.run(main())


def test_missing_file_at_start_then_created(tmp_path, caplog):
    async def main():
        state, mgr, path = setup(tmp_path, "later.json", "[]")
        path.unlink()
        await mgr.start()
        assert names(state) == {}
        write(path, json.dumps([{"name": "x", "address": "127.0.0.1:1"}]))
        await until(lambda: set(names(state)) == {"x"})
        await mgr.stop()

    asyncio.run(main())
    assert any("cannot read" in r.getMessage() for r in caplog.records)
