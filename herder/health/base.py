"""The vocabulary of health checking: layers, results, targets, probes and their registry.

Theory of operation
-------------------
A *probe* looks at one server once and says what it saw: a :class:`ProbeResult` with
``ok``, the :class:`Layer` that decided (HAProxy's check status codes: ``L4CON`` for a
refused connection, ``L7STS`` for a wrong HTTP status...) and a short operator-facing
``detail`` ("L4 connection refused", "L7 status 500", "exit status 1"). A probe never
decides whether the server's health *changes*: that is the rise/fall hysteresis
(:mod:`herder.health.hysteresis`), applied by the engine. This split is Envoy's
``HealthCheckerImplBase`` (owns the policy) versus ``ActiveHealthCheckSession`` (owns the
probe).

Each probe kind lives in its own module and registers itself at the bottom of that module
with :func:`register_probe`, which also registers its config table
(``[[pools.NAME.checks]] type = "..."``) with the native config loader. The keys every
kind shares -- the timing keys, named as HAProxy names them, and ``port``/``addr`` -- come
from :func:`check_table`.

This module is pure: no asyncio, no sockets.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from herder.config.native import register_check_type
from herder.config.schema import Duration, Field, Int, Str, Table
from herder.pool.model import Endpoint

__all__ = [
    "COMMON_KEYS",
    "Layer",
    "Probe",
    "ProbeResult",
    "Target",
    "check_label",
    "check_table",
    "make_probe",
    "probe_kinds",
    "register_probe",
    "target_for",
]


class Layer(enum.Enum):
    """Which layer decided a check's result, as HAProxy's ``HCHK_STATUS_*`` names it.

    The ``*OK`` members are successes; the others say where a failure happened.
    """

    #: The TCP connection was established.
    L4OK = "L4OK"
    #: The TCP connection was not established within the timeout (SYN unanswered).
    L4TOUT = "L4TOUT"
    #: The TCP connection failed: refused, reset, unreachable.
    L4CON = "L4CON"
    #: Layer 6 (TLS hello) passed. Reserved: herder has no TLS check yet.
    L6OK = "L6OK"
    #: Layer 6 timeout. Reserved.
    L6TOUT = "L6TOUT"
    #: Layer 6 invalid response. Reserved.
    L6RSP = "L6RSP"
    #: The application answered as expected (HTTP status and body, DNS rcode and answer).
    L7OK = "L7OK"
    #: Connected, but no (complete) answer within the timeout.
    L7TOUT = "L7TOUT"
    #: The answer could not be understood, or its content did not match (body, DNS answer).
    L7RSP = "L7RSP"
    #: The answer carried the wrong status (HTTP status code, DNS rcode).
    L7STS = "L7STS"
    #: An exec check exited 0 (HAProxy's external check ``PROCOK``).
    PROCOK = "PROCOK"
    #: An exec check exited non-zero or died of a signal (``PROCERR``).
    PROCERR = "PROCERR"
    #: An exec check overran its timeout and was killed (``PROCTOUT``).
    PROCTOUT = "PROCTOUT"

    @property
    def level(self) -> str:
        """``"L4"``, ``"L6"``, ``"L7"`` or ``"EXEC"``: the layer without the outcome."""
        return "EXEC" if self.value.startswith("PROC") else self.value[:2]

    @property
    def ok(self) -> bool:
        return self in (Layer.L4OK, Layer.L6OK, Layer.L7OK, Layer.PROCOK)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe of one server saw.

    ``detail`` is the operator-facing reason ("L7 status 500"); it becomes the reason of
    the server's health transition when this result causes one. ``code`` is the HTTP
    status, DNS rcode or exit status when there is one. ``duration_s`` is how long the
    probe took.
    """

    ok: bool
    layer: Layer
    detail: str
    code: int | None = None
    duration_s: float = 0.0

    def with_duration(self, duration_s: float) -> ProbeResult:
        """A copy with ``duration_s`` set (results are built before the clock is read)."""
        return ProbeResult(self.ok, self.layer, self.detail, self.code, duration_s)


@dataclass(frozen=True, slots=True)
class Target:
    """What a probe looks at: a server of a pool, and the address to check it on.

    ``address`` is the server's address with the check's ``addr``/``port`` overrides
    applied (HAProxy's ``addr`` and ``port`` server keywords).
    """

    pool: str
    server: str
    address: Endpoint


class Probe(Protocol):
    """One configured check. ``check`` must return within ``timeout`` seconds (plus
    scheduling slack) and must not raise for anything the server does: every failure of
    the server is a :class:`ProbeResult` with ``ok=False``. An exception from ``check``
    is a bug in the probe; the engine logs it and counts a failure."""

    kind: str
    timeout: float

    async def check(self, target: Target) -> ProbeResult: ...


ProbeFactory = Callable[[Mapping[str, object], float], Probe]
_probes: dict[str, ProbeFactory] = {}

#: The keys every check type accepts, with HAProxy's names and defaults (see docs/health.md).
COMMON_KEYS: dict[str, Field] = {
    "type": Field(Str(what="a check type"), required=True),
    "name": Field(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", what="a check name (letters, digits, _ - .)"),
                  doc="label used in reasons when a pool has several checks"),
    "inter": Field(Duration(min=0.001), default=2.0, doc="interval between checks of a server that is fully UP"),
    "fastinter": Field(Duration(min=0.001), doc="interval while a server is changing state (default: inter)"),
    "downinter": Field(Duration(min=0.001), doc="interval while a server is fully DOWN (default: inter)"),
    "timeout": Field(Duration(min=0.001), doc="bound of one whole check: connect and answer (default: inter)"),
    "rise": Field(Int(1, 1000), default=2, doc="consecutive successes that bring a DOWN server UP"),
    "fall": Field(Int(1, 1000), default=3, doc="consecutive failures that bring an UP server DOWN"),
    "spread_checks": Field(Int(0, 50), default=0,
                           doc="random +/- percent added to every interval (HAProxy spread-checks)"),
    "port": Field(Int(1, 65535), doc="check this port instead of the server's"),
    "addr": Field(Str(pattern=r"[A-Za-z0-9_.:-]+", what="a host or IP address"),
                  doc="check this address instead of the server's"),
}


def check_table(kind: str, fields: Mapping[str, Field], build=None, what: str = "") -> Table:
    """The config table of check kind ``kind``: :data:`COMMON_KEYS` plus ``fields``.

    ``build(values, path, ctx)`` may check across fields and return the values (or
    INVALID after reporting through ``ctx``).
    """
    all_fields = {**COMMON_KEYS, **fields}
    return Table(all_fields, build=build, what=what or f"a {kind} check table")


def register_probe(kind: str, table: Table, factory: ProbeFactory) -> None:
    """Register check kind ``kind``: its config table and ``factory(spec, timeout) -> Probe``.

    ``spec`` is the parsed check mapping (every key, defaults filled in); ``timeout`` is
    the effective timeout in seconds (``timeout``, else ``inter``).
    """
    if "type" not in table.fields:
        raise ValueError(f"check table of {kind!r} must declare the 'type' key")
    _probes[kind] = factory
    register_check_type(kind, table)


def probe_kinds() -> list[str]:
    """The registered check kinds."""
    return sorted(_probes)


def make_probe(spec: Mapping[str, object], timeout: float) -> Probe:
    """Build the probe of a parsed check mapping. Raises KeyError for an unknown type
    (a caller bug: the config loader only accepts registered types)."""
    return _probes[str(spec["type"])](spec, timeout)


def check_label(spec: Mapping[str, object], index: int, all_specs: tuple[Mapping[str, object], ...]) -> str:
    """How a check is named in reasons: its ``name``, else its type (with ``#index``
    when the pool has several checks of that type)."""
    name = spec.get("name")
    if name:
        return str(name)
    kind = str(spec.get("type"))
    if sum(1 for s in all_specs if s.get("type") == kind) > 1:
        return f"{kind}#{index}"
    return kind


def target_for(pool: str, server: str, address: Endpoint, spec: Mapping[str, object]) -> Target:
    """The :class:`Target` of a check: the server's address with ``addr``/``port`` applied."""
    host = spec.get("addr")
    port = spec.get("port")
    return Target(pool, server, Endpoint(str(host) if host else address.host,
                                         port if isinstance(port, int) else address.port))
