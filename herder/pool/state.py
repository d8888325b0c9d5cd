"""The pool state: the single writer that decides which servers get traffic.

Theory of operation
-------------------
Three kinds of input arrive here and nowhere else:

* **declared and discovered membership** -- :meth:`PoolState.load` (the config: pools,
  services, regions) and :meth:`PoolState.set_servers` (a discovery source's current set);
* **health** -- :meth:`PoolState.set_health` (active checks, passive error detection);
* **admin** -- :meth:`PoolState.set_admin` and :meth:`PoolState.set_weight` (runtime API,
  config, discovery).

Every mutation that changes something produces a new :class:`Snapshot` with the next
version number. A snapshot is immutable and complete (every pool, every server view,
services and regions) and lists the :data:`Change` events that produced it, so a
subscriber can either swap its whole view (Envoy style) or apply the delta (the L4
director's one-transaction diff).

Delivery guarantees, relied on by every data plane:

* every subscriber sees every version, in order, exactly once, from the version current
  when it subscribed;
* a subscriber that raises is logged and does not stop the others or later versions;
* a subscriber may call back into the writer from its callback; the resulting version is
  queued and delivered after the current one has reached every subscriber.

Several mutations can be grouped into one version with ``with state.batch(): ...``.

The writer is not thread-safe: call it from one thread (the event loop's). It is pure:
no asyncio, no sockets, no clock (times arrive inside :class:`Health` values).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from herder.pool.model import (
    Admin,
    AdminCause,
    AdminMode,
    Health,
    HealthState,
    Pool,
    Region,
    Server,
    Service,
    accepts_persistent,
    effective_weight,
    frozen_map,
)

__all__ = [
    "AdminChanged",
    "HealthChanged",
    "PoolAdded",
    "PoolRemoved",
    "PoolState",
    "PoolUpdated",
    "ServerAdded",
    "ServerRemoved",
    "ServerView",
    "PoolView",
    "Snapshot",
    "Subscription",
    "TopologyChanged",
    "UnknownPool",
    "UnknownServer",
    "WeightChanged",
    "initial_health",
]

log = logging.getLogger(__name__)

#: The discovery source name under which the config's static servers are kept.
CONFIG_SOURCE = "config"


class UnknownPool(KeyError):
    """A mutation named a pool the state does not hold (a caller error)."""


class UnknownServer(KeyError):
    """A mutation named a server its pool does not hold (a caller error)."""


# --------------------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class ServerView:
    """One server as a data plane sees it in one snapshot."""

    server: Server
    health: Health
    admin: Admin
    #: Declared weight, or the runtime API's override of it.
    weight: int
    #: The discovery source that contributed the server ("config" for static servers).
    source: str = CONFIG_SOURCE

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def effective_weight(self) -> int:
        """Weight for new traffic; 0 means none. Derived from weight, health and admin."""
        if self.weight != self.server.weight:
            return effective_weight(_reweighted(self.server, self.weight), self.health, self.admin)
        return effective_weight(self.server, self.health, self.admin)

    @property
    def accepts_persistent(self) -> bool:
        """True when a sticky session may still go here (draining and stopping servers)."""
        return accepts_persistent(self.health, self.admin)


def _reweighted(server: Server, weight: int) -> Server:
    return Server(
        name=server.name,
        address=server.address,
        weight=weight,
        region=server.region,
        backup=server.backup,
        admin=server.admin,
        meta=server.meta,
    )


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool in one snapshot: its declaration and the merged, stated servers."""

    pool: Pool
    servers: tuple[ServerView, ...]
    #: The snapshot version in which this pool last changed (cheap change detection).
    version: int

    @property
    def name(self) -> str:
        return self.pool.name

    def server(self, name: str) -> ServerView | None:
        for v in self.servers:
            if v.server.name == name:
                return v
        return None

    def usable(self, *, backup: bool = False) -> tuple[ServerView, ...]:
        """Servers with an effective weight above 0 (active ones, or backups if asked)."""
        return tuple(
            v for v in self.servers if v.effective_weight > 0 and v.server.backup == backup
        )


@dataclass(frozen=True, slots=True)
class ServerAdded:
    pool: str
    server: str


@dataclass(frozen=True, slots=True)
class ServerRemoved:
    pool: str
    server: str


@dataclass(frozen=True, slots=True)
class HealthChanged:
    pool: str
    server: str
    old: Health
    new: Health


@dataclass(frozen=True, slots=True)
class AdminChanged:
    pool: str
    server: str
    old: Admin
    new: Admin


@dataclass(frozen=True, slots=True)
class WeightChanged:
    """The declared weight, or its API override, changed."""

    pool: str
    server: str
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class PoolAdded:
    pool: str


@dataclass(frozen=True, slots=True)
class PoolRemoved:
    pool: str


@dataclass(frozen=True, slots=True)
class PoolUpdated:
    """A pool's declaration changed (balance, checks, settings) or a server's fields did."""

    pool: str


@dataclass(frozen=True, slots=True)
class TopologyChanged:
    """Services or regions changed."""


Change = (
    ServerAdded
    | ServerRemoved
    | HealthChanged
    | AdminChanged
    | WeightChanged
    | PoolAdded
    | PoolRemoved
    | PoolUpdated
    | TopologyChanged
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable, versioned picture of every pool. Version 0 is the empty start."""

    version: int
    pools: Mapping[str, PoolView] = field(default_factory=frozen_map)
    services: Mapping[str, Service] = field(default_factory=frozen_map)
    regions: Mapping[str, Region] = field(default_factory=frozen_map)
    #: The changes from the previous version to this one.
    changes: tuple[Change, ...] = ()

    def pool(self, name: str) -> PoolView:
        """The view of pool ``name``; raises UnknownPool if there is none."""
        try:
            return self.pools[name]
        except KeyError:
            raise UnknownPool(name) from None


# --------------------------------------------------------------------------- writer


def initial_health(pool: Pool, server: Server | None = None) -> Health:
    """The health a server has when it first appears in ``pool``.

    A pool without checks has nothing that could say a server is down: its servers are UP,
    and so is a server whose ``meta["check"]`` is False (a HAProxy ``server`` line without
    ``check``). A checked server starts in ``pool.settings["initial_state"]`` (DOWN unless
    the configuration asks to start up: keepalived's ``alpha`` turned off).
    """
    if not pool.checks or (server is not None and server.meta.get("check") is False):
        return Health(HealthState.UP, "no check configured")
    state = pool.settings.get("initial_state", HealthState.DOWN)
    if not isinstance(state, HealthState):
        state = HealthState(str(state))
    return Health(state, "initial state, not checked yet")


Subscriber = Callable[[Snapshot], None]


class Subscription:
    """Handle returned by :meth:`PoolState.subscribe`; :meth:`close` stops delivery."""

    __slots__ = ("_state", "callback", "name", "last_version")

    def __init__(self, state: PoolState, callback: Subscriber, name: str) -> None:
        self._state = state
        self.callback = callback
        self.name = name
        self.last_version = -1

    def close(self) -> None:
        self._state._unsubscribe(self)


class PoolState:
    """The single writer of pool state; see the module docstring for the guarantees."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}
        self._sources: dict[str, dict[str, tuple[Server, ...]]] = {}
        self._health: dict[tuple[str, str], Health] = {}
        self._admin: dict[tuple[str, str], Admin] = {}
        self._weight: dict[tuple[str, str], int] = {}
        self._services: Mapping[str, Service] = frozen_map()
        self._regions: Mapping[str, Region] = frozen_map()
        self._snapshot = Snapshot(version=0)
        self._subs: list[Subscription] = []
        self._pending: deque[Snapshot] = deque()
        self._publishing = False
        self._batch_depth = 0
        self._dirty: set[str] = set()
        self._batch_changes: list[Change] = []

    # ------------------------------------------------------------------ reading

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (also valid between mutations inside a batch)."""
        return self._snapshot

    @property
    def version(self) -> int:
        return self._snapshot.version

    # ------------------------------------------------------------------ subscribing

    def subscribe(self, callback: Subscriber, *, name: str = "", replay: bool = True) -> Subscription:
        """Call ``callback(snapshot)`` for every new version, in order, once each.

        With ``replay`` (the default) the callback is first called with the current
        snapshot, so a data plane starts from a complete picture. Exceptions raised by the
        callback are logged and swallowed.
        """
        sub = Subscription(self, callback, name or getattr(callback, "__qualname__", "subscriber"))
        self._subs.append(sub)
        if replay:
            self._deliver(sub, self._snapshot)
        else:
            sub.last_version = self._snapshot.version
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def _deliver(self, sub: Subscription, snap: Snapshot) -> None:
        if snap.version <= sub.last_version:
            return
        sub.last_version = snap.version
        try:
            sub.callback(snap)
        except Exception:
            log.exception("pool state subscriber %s failed on version %d", sub.name, snap.version)

    # ------------------------------------------------------------------ batching

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the mutations made inside the block into a single version."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self._flush()

    # ------------------------------------------------------------------ mutations

    def load(
        self,
        pools: Iterable[Pool],
        services: Iterable[Service] = (),
        regions: Iterable[Region] = (),
    ) -> Snapshot:
        """Replace the declared configuration (initial load or reload).

        Servers that stay keep their health and API admin state; servers that disappear
        lose it. Discovery sets of pools that stay are kept; those of removed pools go.
        Returns the current snapshot afterwards.
        """
        new = {p.name: p for p in pools}
        with self.batch():
            for name in list(self._pools):
                if name not in new:
                    del self._pools[name]
                    self._sources.pop(name, None)
                    self._batch_changes.append(PoolRemoved(name))
                    self._dirty.add(name)
            for name, pool in new.items():
                old = self._pools.get(name)
                if old is None:
                    self._batch_changes.append(PoolAdded(name))
                elif _declaration(old) != _declaration(pool):
                    self._batch_changes.append(PoolUpdated(name))
                self._pools[name] = pool
                self._sources.setdefault(name, {})[CONFIG_SOURCE] = pool.servers
                self._dirty.add(name)
            services_map = frozen_map({s.name: s for s in services})
            regions_map = frozen_map({r.name: r for r in regions})
            if dict(services_map) != dict(self._services) or dict(regions_map) != dict(self._regions):
                self._services, self._regions = services_map, regions_map
                self._batch_changes.append(TopologyChanged())
        return self._snapshot

    def set_servers(self, pool: str, source: str, servers: Iterable[Server]) -> None:
        """Replace what discovery ``source`` says pool ``pool`` holds.

        A server's ``admin`` field is applied with cause DISCOVERY (CONFIG for the config
        source). Names must be unique within the source; across sources the first source
        (config first, then by source name) wins and the duplicate is logged and ignored.
        """
        if pool not in self._pools:
            raise UnknownPool(pool)
        servers = tuple(servers)
        with self.batch():
            self._sources[pool][source] = servers
            self._dirty.add(pool)

    def set_health(self, pool: str, server: str, health: Health) -> bool:
        """Record a health transition (from the health engine). Returns False when the
        server is not (or no longer) in the pool: a late check result is not an error."""
        key = (pool, server)
        if not self._has_server(pool, server):
            return False
        if self._health.get(key) == health:
            return True
        with self.batch():
            self._health[key] = health
            self._dirty.add(pool)
        return True

    def set_admin(
        self, pool: str, server: str, mode: AdminMode, cause: AdminCause = AdminCause.API
    ) -> None:
        """Set the admin mode ``cause`` asks for (READY clears that cause's flag only)."""
        if pool not in self._pools:
            raise UnknownPool(pool)
        if not self._has_server(pool, server):
            raise UnknownServer(f"{pool}/{server}")
        key = (pool, server)
        with self.batch():
            self._admin[key] = self._admin.get(key, Admin()).with_cause(cause, mode)
            self._dirty.add(pool)

    def set_weight(self, pool: str, server: str, weight: int | None) -> None:
        """Override the declared weight at run time (None restores the declared one)."""
        if pool not in self._pools:
            raise UnknownPool(pool)
        if not self._has_server(pool, server):
            raise UnknownServer(f"{pool}/{server}")
        key = (pool, server)
        with self.batch():
            if weight is None:
                self._weight.pop(key, None)
            else:
                if not 0 <= weight <= 65535:
                    raise ValueError(f"weight {weight} is outside 0..65535")
                self._weight[key] = weight
            self._dirty.add(pool)

    # ------------------------------------------------------------------ internals

    def _has_server(self, pool: str, server: str) -> bool:
        view = self._snapshot.pools.get(pool)
        if view is not None and view.server(server) is not None and pool not in self._dirty:
            return True
        return any(server == s.name for s, _ in self._merged(pool))

    def _merged(self, pool: str) -> list[tuple[Server, str]]:
        sources = self._sources.get(pool, {})
        order = [CONFIG_SOURCE] + sorted(k for k in sources if k != CONFIG_SOURCE)
        out: list[tuple[Server, str]] = []
        seen: set[str] = set()
        for src in order:
            for s in sources.get(src, ()):
                if s.name in seen:
                    log.warning("pool %s: source %s repeats server name %s; ignored", pool, src, s.name)
                    continue
                seen.add(s.name)
                out.append((s, src))
        return out

    def _flush(self) -> None:
        if not self._dirty and not self._batch_changes:
            return
        old = self._snapshot
        version = old.version + 1
        changes: list[Change] = list(self._batch_changes)
        pools = dict(old.pools)
        for name in sorted(self._dirty):
            if name not in self._pools:
                gone = pools.pop(name, None)
                if gone is not None:
                    for v in gone.servers:
                        self._forget(name, v.name)
                continue
            view = self._build(name, old.pools.get(name), version, changes)
            if view is not None:
                pools[name] = view
        self._dirty.clear()
        self._batch_changes.clear()
        if not changes:
            return
        snap = Snapshot(
            version=version,
            pools=frozen_map(pools),
            services=self._services,
            regions=self._regions,
            changes=tuple(changes),
        )
        self._snapshot = snap
        self._publish(snap)

    def _forget(self, pool: str, server: str) -> None:
        key = (pool, server)
        self._health.pop(key, None)
        self._admin.pop(key, None)
        self._weight.pop(key, None)

    def _build(self, name: str, old: PoolView | None, version: int, changes: list[Change]) -> PoolView | None:
        pool = self._pools[name]
        merged = self._merged(name)
        old_views = {v.name: v for v in old.servers} if old else {}
        views: list[ServerView] = []
        local: list[Change] = []
        new_names = {s.name for s, _ in merged}
        for sname, ov in old_views.items():
            if sname not in new_names:
                self._forget(name, sname)
                local.append(ServerRemoved(name, sname))
                log.info("pool %s: server %s removed (source %s)", name, sname, ov.source)
        for server, source in merged:
            key = (name, server.name)
            cause = AdminCause.CONFIG if source == CONFIG_SOURCE else AdminCause.DISCOVERY
            admin = self._admin.get(key, Admin()).with_cause(cause, server.admin)
            self._admin[key] = admin
            health = self._health.get(key)
            if health is None:
                health = initial_health(pool, server)
                self._health[key] = health
            weight = self._weight.get(key, server.weight)
            view = ServerView(server, health, admin, weight, source)
            views.append(view)
            ov = old_views.get(server.name)
            if ov is None:
                local.append(ServerAdded(name, server.name))
                log.info(
                    "pool %s: server %s added at %s (source %s, %s, %s, weight %d)",
                    name, server.name, server.address, source, health.state.value,
                    admin.describe(), view.effective_weight,
                )
                continue
            if ov.server != server and ov.server.weight == server.weight:
                local.append(PoolUpdated(name))
            if ov.health != health:
                local.append(HealthChanged(name, server.name, ov.health, health))
                if ov.health.state != health.state:
                    log.info(
                        "pool %s: server %s is %s (%s), effective weight %d -> %d",
                        name, server.name, health.state.value.upper(), health.reason or "no reason given",
                        ov.effective_weight, view.effective_weight,
                    )
            if ov.admin != admin:
                local.append(AdminChanged(name, server.name, ov.admin, admin))
                log.info(
                    "pool %s: server %s admin %s -> %s, effective weight %d -> %d",
                    name, server.name, ov.admin.describe(), admin.describe(),
                    ov.effective_weight, view.effective_weight,
                )
            if ov.weight != weight:
                local.append(WeightChanged(name, server.name, ov.weight, weight))
                log.info("pool %s: server %s weight %d -> %d", name, server.name, ov.weight, weight)
        new_view_servers = tuple(views)
        pool_changed = any(isinstance(c, (PoolAdded, PoolUpdated)) and c.pool == name for c in changes)
        if not local and not pool_changed and old is not None and old.pool == pool:
            return old
        # de-duplicate PoolUpdated for the same pool
        for c in local:
            if isinstance(c, PoolUpdated) and any(isinstance(x, PoolUpdated) and x.pool == name for x in changes):
                continue
            changes.append(c)
        return PoolView(pool=pool, servers=new_view_servers, version=version)

    def _publish(self, snap: Snapshot) -> None:
        self._pending.append(snap)
        if self._publishing:
            return
        self._publishing = True
        try:
            while self._pending:
                s = self._pending.popleft()
                for sub in list(self._subs):
                    self._deliver(sub, s)
        finally:
            self._publishing = False


def _declaration(pool: Pool) -> tuple:
    return (pool.balance, dict(pool.balance_options), pool.checks, dict(pool.settings))
