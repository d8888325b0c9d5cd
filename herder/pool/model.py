"""The vocabulary every layer shares: Service, Pool, Server, Region, and server state.

Theory of operation
-------------------
These are plain frozen dataclasses. They describe what the operator *declared* (or what
discovery found); they never change in place. What a server is *doing* lives on two
separate axes, as HAProxy keeps ``srv_state`` apart from ``SRV_ADMF_*``:

* ``Health`` -- the operational axis (DOWN / STARTING / UP / STOPPING), driven by health
  checks and passive error detection. Only the health engine moves it.
* ``Admin`` -- the administrative axis (READY / DRAIN / MAINT), set by an operator through
  the config, the runtime API, or by a discovery source. Each *cause* owns its own flag, so
  an API ``ready`` does not undo a drain the config asked for, and a health check can never
  undo an operator's drain.

The effective weight is *derived* from the declared weight and both axes by
:func:`effective_weight`; it is never stored. Rules (documented in docs/config.md):

* MAINT from any cause: weight 0, and no traffic at all, not even persistent sessions.
* DRAIN from any cause (and no MAINT): weight 0 for new traffic; persistent sessions
  (cookies, persistence tables) may still reach the server while it is healthy.
* Health DOWN: weight 0, no traffic. STOPPING: weight 0, persistent traffic still allowed
  (HAProxy's "disable-on-404"). STARTING and UP: the declared weight.

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "Admin",
    "AdminCause",
    "AdminMode",
    "Endpoint",
    "Health",
    "HealthState",
    "Pool",
    "Region",
    "Server",
    "Service",
    "effective_weight",
    "frozen_map",
]

#: HAProxy accepts weights 0..256; LVS accepts up to 65535. We take the larger range.
MAX_WEIGHT = 65535


def frozen_map(d: Mapping | None = None) -> Mapping:
    """Return a read-only view of a copy of ``d`` (an immutable mapping for dataclasses)."""
    return MappingProxyType(dict(d or {}))


class HealthState(enum.Enum):
    """Operational state of a server, driven by checks (HAProxy ``enum srv_state``)."""

    DOWN = "down"
    #: Up, but in slow start: still warming up after a DOWN -> UP transition.
    STARTING = "starting"
    UP = "up"
    #: Going away gracefully: no new traffic, persistent sessions may continue.
    STOPPING = "stopping"


class AdminMode(enum.IntEnum):
    """Administrative mode; a larger value is stronger (MAINT beats DRAIN beats READY)."""

    READY = 0
    DRAIN = 1
    MAINT = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class AdminCause(enum.Enum):
    """Who asked for an admin mode. Each cause owns one flag."""

    CONFIG = "config"
    API = "api"
    DISCOVERY = "discovery"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address and a port: where a listener binds or where a server answers.

    ``host`` is an IP address literal or a host name (resolved by the layer that uses it).
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, or None when it is a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Server:
    """One server of a pool, as declared or discovered.

    ``name`` is unique within its pool and is the key the pool state tracks health and
    admin state by. ``weight`` is the declared weight (0 quiesces the server). ``admin`` is
    the admin mode the *declaring source* asks for (config or discovery), applied with that
    source's cause. ``meta`` carries layer-specific, read-only extras (an L7 cookie value,
    SRV priority, ...).
    """

    name: str
    address: Endpoint
    weight: int = 1
    region: str | None = None
    backup: bool = False
    admin: AdminMode = AdminMode.READY
    meta: Mapping[str, object] = field(default_factory=frozen_map)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("server name must not be empty")
        if not 0 <= self.weight <= MAX_WEIGHT:
            raise ValueError(f"weight {self.weight} is outside 0..{MAX_WEIGHT}")
        if not 0 < self.address.port < 65536:
            raise ValueError(f"port {self.address.port} is outside 1..65535")


@dataclass(frozen=True, slots=True)
class Pool:
    """A named set of servers behind a service, with how to choose among them.

    ``balance`` names an algorithm of the balance registry (``roundrobin``, ``maglev``...);
    ``balance_options`` are that algorithm's options. ``checks`` holds health-check
    specifications (plain mappings, interpreted by herder.health); an empty tuple means the
    pool is not checked and its servers are UP unless discovery or an operator says otherwise.
    ``settings`` carries the remaining per-pool options of the layers (plain data).
    """

    name: str
    servers: tuple[Server, ...] = ()
    balance: str = "roundrobin"
    balance_options: Mapping[str, object] = field(default_factory=frozen_map)
    checks: tuple[Mapping[str, object], ...] = ()
    settings: Mapping[str, object] = field(default_factory=frozen_map)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for s in self.servers:
            if s.name in seen:
                raise ValueError(f"duplicate server name {s.name!r} in pool {self.name!r}")
            seen.add(s.name)

    def server(self, name: str) -> Server | None:
        """The server called ``name``, or None."""
        for s in self.servers:
            if s.name == name:
                return s
        return None


@dataclass(frozen=True, slots=True)
class Region:
    """A region: a group of clients (by source prefix) and of servers (by ``Server.region``)."""

    name: str
    prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class Service:
    """What clients hit: a name and/or listeners, a protocol mode, and the pool behind it.

    ``mode`` is ``http``, ``tcp``, ``udp`` or ``dns``; the layer that owns the mode builds
    its data plane from the service. ``settings`` carries layer-specific options.
    """

    name: str
    pool: str
    mode: str = "http"
    listen: tuple[Endpoint, ...] = ()
    settings: Mapping[str, object] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class Health:
    """A server's operational state with why it is in it.

    ``reason`` is the operator-facing cause of the last transition ("L4 connection refused",
    "L7 status 500", "no check configured"); ``since`` is the monotonic time of the last
    change as given by whoever reported it (None when unknown).
    """

    state: HealthState
    reason: str = ""
    since: float | None = None

    @property
    def serving(self) -> bool:
        """True when the server may take new traffic as far as health is concerned."""
        return self.state in (HealthState.UP, HealthState.STARTING)


@dataclass(frozen=True, slots=True)
class Admin:
    """Admin flags of one server: the mode each cause asked for.

    Immutable; :meth:`with_cause` returns a new value. The effective mode is the strongest
    mode over all causes.
    """

    flags: Mapping[AdminCause, AdminMode] = field(default_factory=frozen_map)

    @property
    def mode(self) -> AdminMode:
        return max(self.flags.values(), default=AdminMode.READY)

    @property
    def causes(self) -> tuple[AdminCause, ...]:
        """The causes that hold the effective mode (empty when READY)."""
        m = self.mode
        if m is AdminMode.READY:
            return ()
        return tuple(c for c in AdminCause if self.flags.get(c) is m)

    def with_cause(self, cause: AdminCause, mode: AdminMode) -> Admin:
        """A copy where ``cause`` asks for ``mode`` (READY clears that cause's flag)."""
        flags = dict(self.flags)
        if mode is AdminMode.READY:
            flags.pop(cause, None)
        else:
            flags[cause] = mode
        return Admin(frozen_map(flags))

    def describe(self) -> str:
        m = self.mode
        if m is AdminMode.READY:
            return "ready"
        return f"{m.label} ({', '.join(c.value for c in self.causes)})"


def effective_weight(server: Server, health: Health, admin: Admin) -> int:
    """The weight a data plane gives ``server`` for *new* traffic; 0 means none.

    Derived, never stored: MAINT or DRAIN (any cause) gives 0; health DOWN or STOPPING
    gives 0; otherwise the declared weight.
    """
    if admin.mode is not AdminMode.READY:
        return 0
    if not health.serving:
        return 0
    return server.weight


def accepts_persistent(health: Health, admin: Admin) -> bool:
    """True when an established persistent session (cookie, stick table) may still use
    the server: not in MAINT and not DOWN. Draining and stopping servers keep them."""
    return admin.mode is not AdminMode.MAINT and health.state is not HealthState.DOWN
