"""The ``discovery`` component: runs the sources every pool declares.

Config: ``[[pools.NAME.discovery]]`` tables, each with a ``type`` (``file``, ``dns``)
and that type's keys (see docs/discovery.md). The config's own ``[[pools.NAME.servers]]``
are the static source; they need no discovery table.

The manager starts every declared source before the data planes start (each source's
first round is awaited, bounded), then follows the pool state: when a reload adds,
changes or removes a pool's discovery tables, the matching sources are started, or
stopped with their servers withdrawn from the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from herder.config.native import register_pool_key
from herder.config.schema import Field, ListOf

# The source modules register their kinds on import.
from herder.discovery import dns as _dns  # noqa: F401
from herder.discovery import file as _file  # noqa: F401
from herder.discovery.base import Source, SourceSpec, make_source
from herder.pool.state import PoolAdded, PoolRemoved, PoolState, PoolUpdated, Snapshot
from herder.runtime import register_component

if TYPE_CHECKING:
    from herder.runtime import Runtime

__all__ = ["DiscoveryManager"]

log = logging.getLogger(__name__)


def _declared(snap: Snapshot) -> dict[str, tuple[Mapping[str, object], ...]]:
    out = {}
    for name, pv in snap.pools.items():
        specs = pv.pool.settings.get("discovery")
        if specs:
            out[name] = tuple(specs)  # type: ignore[arg-type]
    return out


class DiscoveryManager:
    """Starts, follows and stops the discovery sources of every pool."""

    name = "discovery"

    def __init__(self, pool_state: PoolState) -> None:
        self.pool_state = pool_state
        #: pool -> [(spec, source)], in declaration order.
        self.sources: dict[str, list[tuple[Mapping[str, object], Source]]] = {}
        self._sub = None
        self._pending: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Start every declared source; returns when each has done its first round."""
        starting = self._reconcile(_declared(self.pool_state.snapshot))
        if starting:
            await asyncio.gather(*(s.start() for s in starting))
        self._sub = self.pool_state.subscribe(self._on_snapshot, name="discovery", replay=False)

    async def stop(self) -> None:
        """Stop every source (their servers stay in the pool state)."""
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        for t in list(self._pending):
            t.cancel()
        all_sources = [src for lst in self.sources.values() for _, src in lst]
        self.sources.clear()
        await asyncio.gather(*(s.stop() for s in all_sources), *self._pending, return_exceptions=True)
        self._pending.clear()

    def _on_snapshot(self, snap: Snapshot) -> None:
        if not any(isinstance(c, (PoolAdded, PoolRemoved, PoolUpdated)) for c in snap.changes):
            return
        for src in self._reconcile(_declared(snap)):
            self._spawn(src.start())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _reconcile(self, declared: dict[str, tuple[Mapping[str, object], ...]]) -> list[Source]:
        """Match running sources to declared ones; returns the sources to start."""
        starting: list[Source] = []
        for pool in set(self.sources) | set(declared):
            running = self.sources.get(pool, [])
            wanted = list(declared.get(pool, ()))
            keep: list[tuple[Mapping[str, object], Source]] = []
            for spec, src in running:
                if spec in wanted:
                    wanted.remove(spec)
                    keep.append((spec, src))
                else:
                    log.info("pool %s: discovery %s removed", pool, src.source)
                    self._spawn(self._retire(src))
            taken = {src.source for _, src in keep}
            for spec in wanted:
                src = make_source(self.pool_state, pool, spec)
                if src.source in taken:
                    src.source = f"{src.source}#{len(taken)}"
                taken.add(src.source)
                keep.append((spec, src))
                starting.append(src)
            if keep:
                self.sources[pool] = keep
            else:
                self.sources.pop(pool, None)
        return starting

    @staticmethod
    async def _retire(src: Source) -> None:
        await src.stop()
        src.withdraw()


register_pool_key("discovery", Field(ListOf(SourceSpec()), doc="discovery sources of the pool's servers"))


def _factory(rt: Runtime) -> list[DiscoveryManager]:
    # Always present: a reload may add discovery to a pool.
    return [DiscoveryManager(rt.pool_state)]


register_component("discovery", _factory, order=15)
