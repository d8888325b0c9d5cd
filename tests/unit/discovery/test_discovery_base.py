"""The Source interface: whole sets in, the pool state merges; errors keep the last set."""

from __future__ import annotations

import asyncio
import logging

import pytest

from herder.discovery.base import PollingSource
from herder.pool.model import Endpoint, Pool, Server
from herder.pool.state import PoolState, ServerAdded, ServerRemoved

pytestmark = pytest.mark.unit


class Listed(PollingSource):
    """A source that publishes whatever its list says each round, or fails."""

    kind = "listed"

    def __init__(self, state: PoolState, rounds: list) -> None:
        super().__init__(state, "web", {"type": "listed"}, "test")
        self.rounds = rounds
        self.polls = 0

    async def poll(self) -> float:
        self.polls += 1
        item = self.rounds[min(self.polls - 1, len(self.rounds) - 1)]
        if isinstance(item, Exception):
            raise item
        self.publish(item)
        return 0.001


def srv(name: str, port: int = 80) -> Server:
    return Server(name, Endpoint("127.0.0.1", port))


def test_publish_merges_with_the_config_and_reports_changes(caplog):
    state = PoolState()
    state.load([Pool("web", (srv("static"),))])
    src = Listed(state, [])
    caplog.set_level(logging.INFO, "herder.discovery.base")
    assert src.publish([srv("a"), srv("b")])
    assert not src.publish([srv("a"), srv("b")])  # unchanged: nothing published
    src.publish([srv("a", 81), srv("c")])
    view = state.snapshot.pool("web")
    assert [v.name for v in view.servers] == ["static", "a", "c"]
    assert view.server("a").source == "listed:test"
    assert any("2 server(s) (+c -b ~a)" in r.message for r in caplog.records)
    src.withdraw()
    assert [v.name for v in state.snapshot.pool("web").servers] == ["static"]


def test_polling_keeps_the_last_set_on_errors(caplog):
    state = PoolState()
    state.load([Pool("web")])
    changes: list = []
    state.subscribe(lambda s: changes.extend(c for c in s.changes if isinstance(c, (ServerAdded, ServerRemoved))))
    src = Listed(state, [[srv("a")], RuntimeError("boom"), RuntimeError("boom"), [srv("a"), srv("b")]])
    src.retry_s = 0.001

    async def main():
        await src.start()
        assert [v.name for v in state.snapshot.pool("web").servers] == ["a"]
        while src.polls < 4:
            await asyncio.sleep(0.001)
        await src.stop()

    asyncio.run(main())
    assert [v.name for v in state.snapshot.pool("web").servers] == ["a", "b"]
    assert changes == [ServerAdded("web", "a"), ServerAdded("web", "b")]
    assert any("poll failed; keeping the last set" in r.message for r in caplog.records)


def test_publish_to_a_removed_pool_is_ignored():
    state = PoolState()
    state.load([Pool("web")])
    src = Listed(state, [])
    state.load([])
    assert not src.publish([srv("a")])
