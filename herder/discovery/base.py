"""The discovery source interface: something that tells the pool state which servers exist.

Theory of operation
-------------------
A :class:`Source` watches one place (a file, a DNS name; later an etcd prefix or a
ZooKeeper node) for one pool, and publishes what it finds with
``pool_state.set_servers(pool, source, servers)``: always the *whole* current set, never
a delta, so a source needs no memory of what it said before. The pool state merges the
sets of every source of a pool (and the config's static servers, source ``"config"``)
with health and admin state; a server that leaves every set stops getting new traffic.

A source has a lifecycle like a runtime component: ``await start()`` returns once the
first answer is in (or has failed and been logged), so that the data planes start from
a complete pool; ``await stop()`` ends its watching. What a source does between the two
is its own business: :class:`PollingSource` covers the common case (do one round, sleep
what the round says, repeat) and is all that a file, DNS, etcd or ZooKeeper source
needs; a source with a push API (an etcd watch) overrides :meth:`Source.run`.

Errors never empty a pool: a source that cannot read its file or reach its name server
logs why and keeps its last good set.

A source kind registers itself (its config table and factory) with
:func:`register_source`; ``[[pools.NAME.discovery]]`` tables select it with
``type = "..."``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from herder.config.schema import INVALID, Spec, Table, describe
from herder.pool.model import Server, frozen_map
from herder.pool.state import PoolState, UnknownPool

__all__ = [
    "PollingSource",
    "Source",
    "SourceSpec",
    "make_source",
    "register_source",
    "source_kinds",
]

log = logging.getLogger(__name__)


class Source:
    """One discovery source of one pool (see the module docstring).

    Subclasses set :attr:`kind`, build their state from ``spec`` and implement
    :meth:`run` (or :meth:`PollingSource.poll`). ``label`` names what is watched
    (a path, a DNS name) in logs and in the pool state's source name ``kind:label``.
    """

    kind: ClassVar[str] = ""

    def __init__(self, pool_state: PoolState, pool: str, spec: Mapping[str, object], label: str) -> None:
        self.pool_state = pool_state
        self.pool = pool
        self.spec = spec
        self.label = label
        #: The source name under which the pool state keeps this source's servers.
        self.source = f"{self.kind}:{label}"
        #: The last set published (None before the first).
        self.servers: tuple[Server, ...] | None = None
        self._task: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return f"discovery {self.source} (pool {self.pool})"

    # -------------------------------------------------------------- publishing

    def publish(self, servers: Iterable[Server]) -> bool:
        """Publish the whole current set; returns False when it equals the last one.

        Logs one line with the number of servers and what changed.
        """
        new = tuple(servers)
        if new == self.servers:
            return False
        old = {s.name: s for s in self.servers or ()}
        names = {s.name for s in new}
        added = sorted(n for n in names if n not in old)
        removed = sorted(n for n in old if n not in names)
        changed = sorted(s.name for s in new if s.name in old and old[s.name] != s)
        self.servers = new
        try:
            self.pool_state.set_servers(self.pool, self.source, new)
        except UnknownPool:
            log.debug("%s: pool %s is gone; set not published", self.source, self.pool)
            return False
        parts = [f"+{n}" for n in added] + [f"-{n}" for n in removed] + [f"~{n}" for n in changed]
        log.info("pool %s: discovery %s: %d server(s)%s", self.pool, self.source, len(new),
                 f" ({' '.join(parts)})" if parts else "")
        return True

    def withdraw(self) -> None:
        """Remove this source's servers from the pool (the source was removed)."""
        if self.servers:
            self.publish(())

    # -------------------------------------------------------------- lifecycle

    async def first(self) -> None:
        """The first round, awaited by :meth:`start`. Default: nothing."""

    async def run(self) -> None:
        """Watch until cancelled, publishing each change. Must not raise."""
        raise NotImplementedError

    async def start(self) -> None:
        """Do the first round, then watch in the background."""
        try:
            await self.first()
        except Exception:
            log.exception("%s: first round failed", self.name)
        self._task = asyncio.get_running_loop().create_task(self._guarded(), name=self.name)

    async def _guarded(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped on an unexpected error; its last set stays", self.name)

    async def stop(self) -> None:
        """Stop watching (the published set stays in the pool state)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


class PollingSource(Source):
    """A source that looks, publishes, and sleeps: :meth:`poll` does one round and says
    how long to sleep before the next. ``first_timeout`` bounds the first round."""

    first_timeout: float = 5.0
    #: Delay before the next round when :meth:`poll` raised.
    retry_s: float = 1.0
    _next: float = 0.0

    async def poll(self) -> float:
        """Do one round (publishing with :meth:`publish` when the set changed) and return
        the seconds until the next. Errors are logged by the subclass and keep the last
        set; an exception escaping here is logged and retried after ``retry_s``."""
        raise NotImplementedError

    async def first(self) -> None:
        try:
            self._next = await asyncio.wait_for(self.poll(), self.first_timeout)
        except TimeoutError:
            log.warning("%s: no answer within %.1fs at start; retrying in the background",
                        self.name, self.first_timeout)
            self._next = 0.0

    async def run(self) -> None:
        delay = self._next
        while True:
            await asyncio.sleep(delay)
            try:
                delay = await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: poll failed; keeping the last set", self.name)
                delay = self.retry_s


# --------------------------------------------------------------------------- registry

SourceFactory = Callable[[PoolState, str, Mapping[str, object]], Source]
_tables: dict[str, Table] = {}
_factories: dict[str, SourceFactory] = {}


def register_source(kind: str, table: Table, factory: SourceFactory) -> None:
    """Register discovery kind ``kind``: its config table (which must declare the
    ``type`` key) and ``factory(pool_state, pool, spec) -> Source``."""
    if "type" not in table.fields:
        raise ValueError(f"discovery table of {kind!r} must declare the 'type' key")
    _tables[kind] = table
    _factories[kind] = factory


def source_kinds() -> list[str]:
    """The registered discovery kinds."""
    return sorted(_tables)


def make_source(pool_state: PoolState, pool: str, spec: Mapping[str, object]) -> Source:
    """Build the source of a parsed discovery table. KeyError for an unknown type."""
    return _factories[str(spec["type"])](pool_state, pool, spec)


class SourceSpec(Spec):
    """A ``[[pools.NAME.discovery]]`` table, parsed by the table of its ``type``."""

    expected = "a discovery table with a type"

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.bad(value, path, ctx)
        kinds = ", ".join(source_kinds()) or "none registered"
        kind = value.get("type")
        if kind is None:
            ctx.error(path, f"missing required key 'type' (one of: {kinds})")
            return INVALID
        table = _tables.get(kind) if isinstance(kind, str) else None
        if table is None:
            ctx.error((*path, "type"), f"unknown discovery type {describe(kind)}; expected one of: {kinds}")
            return INVALID
        parsed = table.parse(value, path, ctx)
        return parsed if parsed is INVALID else frozen_map(parsed)
