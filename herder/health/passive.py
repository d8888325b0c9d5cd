"""Passive health: errors seen by the data planes eject a server (outlier detection).

Theory of operation
-------------------
The data planes see every real connection and request. They report each outcome for a
server through :meth:`herder.health.engine.HealthChecker.observe` (``ok`` or an error
``kind``: ``connect``, ``timeout``, ``reset``, ``http_5xx``). This module holds the
policy, pure and with time passed in:

* ``error_limit`` consecutive errors (HAProxy ``error-limit``, default 10; Envoy's
  ``consecutive_5xx``) eject the server: it is marked DOWN at once. Any success in
  between resets the count.
* ``observe = "layer4"`` counts only connection errors (a 5xx proves the connection
  works, so it counts as a success); ``"layer7"`` (the default) counts 5xx responses too,
  as HAProxy's ``observe layer4|layer7`` does.
* An ejected server stays DOWN until the active checks bring it back: its rise/fall
  counters are forced to 0, so it needs ``rise`` consecutive passing checks (HAProxy
  ``on-error mark-down``). A pool without active checks has nothing that could bring it
  back, so there the ejection ends after ``eject_time`` (Envoy ``base_ejection_time``,
  default 30 s).
* At most ``max_ejected_percent`` of a pool's servers may be ejected by passive detection
  at the same time (Envoy ``max_ejection_percent``, default 10), but at least one when
  the percentage is above 0. A server that reaches the limit while the cap is full is not
  ejected; the refusal is logged. Servers DOWN through active checks do not count
  against the cap.

The engine applies verdicts to the pool state; this module never touches it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Ejection", "ErrorKind", "PassiveDetector", "PassivePolicy", "Verdict"]


class ErrorKind(enum.Enum):
    """What went wrong with one real connection or request."""

    #: The connection could not be established (refused, unreachable).
    CONNECT = "connect"
    #: Connecting or waiting for the answer took too long.
    TIMEOUT = "timeout"
    #: The connection was reset or closed in the middle of an exchange.
    RESET = "reset"
    #: The server answered with a 5xx status (a layer-7 error).
    HTTP_5XX = "http_5xx"
    #: An error the data plane could not classify further (counted at layer 4).
    ERROR = "error"

    @property
    def layer(self) -> int:
        return 7 if self is ErrorKind.HTTP_5XX else 4


class Verdict(enum.Enum):
    """What :meth:`PassiveDetector.observe` decided."""

    #: Nothing changes.
    NONE = "none"
    #: The limit was reached: eject the server now.
    EJECT = "eject"
    #: The limit was reached but the pool's ejection cap is full.
    CAPPED = "capped"


@dataclass(frozen=True, slots=True)
class PassivePolicy:
    """A pool's ``[pools.NAME.passive]`` settings."""

    error_limit: int = 10
    observe: str = "layer7"
    max_ejected_percent: int = 10
    eject_time: float = 30.0

    def __post_init__(self) -> None:
        if self.error_limit < 1:
            raise ValueError("error_limit must be at least 1")
        if self.observe not in ("layer4", "layer7"):
            raise ValueError(f"observe must be layer4 or layer7, not {self.observe!r}")
        if not 0 <= self.max_ejected_percent <= 100:
            raise ValueError("max_ejected_percent must be within 0..100")

    @classmethod
    def from_spec(cls, spec: Mapping[str, object]) -> PassivePolicy:
        """The policy of a parsed ``passive`` table (missing keys take the defaults)."""
        d = cls()
        return cls(
            error_limit=int(spec.get("error_limit") or d.error_limit),  # type: ignore[call-overload]
            observe=str(spec.get("observe") or d.observe),
            max_ejected_percent=int(spec.get("max_ejected_percent", d.max_ejected_percent)),  # type: ignore[call-overload]
            eject_time=float(spec.get("eject_time") or d.eject_time),  # type: ignore[arg-type]
        )

    def allowed(self, pool_size: int) -> int:
        """How many servers of a pool of ``pool_size`` may be ejected at once."""
        if self.max_ejected_percent <= 0 or pool_size <= 0:
            return 0
        return max(1, pool_size * self.max_ejected_percent // 100)


@dataclass(frozen=True, slots=True)
class Ejection:
    """One ejected server: when, why, and until when (None: until active checks pass)."""

    since: float
    until: float | None
    reason: str


Key = tuple[str, str]


class PassiveDetector:
    """Consecutive-error counting and ejection decisions for every pool; time passed in."""

    def __init__(self) -> None:
        self._errors: dict[Key, int] = {}
        self._ejected: dict[Key, Ejection] = {}

    def observe(self, pool: str, server: str, ok: bool, kind: ErrorKind | str, policy: PassivePolicy,
                *, pool_size: int, now: float, timed: bool) -> tuple[Verdict, str]:
        """Count one outcome of one server.

        Args:
            pool, server: the server.
            ok: the connection/request succeeded.
            kind: for an error, what kind (ignored when ``ok``).
            policy: the pool's policy.
            pool_size: the number of servers in the pool (for the cap).
            now: the current time (monotonic seconds).
            timed: the ejection ends after ``eject_time`` (the pool has no active checks).

        Returns:
            ``(verdict, reason)``; ``reason`` says why for EJECT and CAPPED.

        Raises:
            ValueError: ``kind`` is not an :class:`ErrorKind` value (a caller bug).
        """
        key = (pool, server)
        kind = ErrorKind(kind)
        if not ok and policy.observe == "layer4" and kind.layer == 7:
            ok = True  # an HTTP answer, even a 5xx, proves layer 4 works
        if ok:
            self._errors.pop(key, None)
            return Verdict.NONE, ""
        if key in self._ejected:
            return Verdict.NONE, ""
        n = self._errors.get(key, 0) + 1
        self._errors[key] = n
        if n < policy.error_limit:
            return Verdict.NONE, ""
        reason = f"passive: {n} consecutive errors (last: {kind.value})"
        allowed = policy.allowed(pool_size)
        if self.ejected_count(pool) >= allowed:
            return Verdict.CAPPED, (f"{reason}; not ejected: {self.ejected_count(pool)} of {pool_size} "
                                    f"server(s) already ejected (max_ejected_percent {policy.max_ejected_percent})")
        self._errors.pop(key, None)
        self._ejected[key] = Ejection(now, now + policy.eject_time if timed else None, reason)
        return Verdict.EJECT, reason

    def ejected(self, pool: str, server: str) -> bool:
        return (pool, server) in self._ejected

    def ejection(self, pool: str, server: str) -> Ejection | None:
        return self._ejected.get((pool, server))

    def ejected_count(self, pool: str) -> int:
        return sum(1 for p, _ in self._ejected if p == pool)

    def errors(self, pool: str, server: str) -> int:
        """The current count of consecutive errors."""
        return self._errors.get((pool, server), 0)

    def release(self, pool: str, server: str) -> bool:
        """End an ejection (the active checks passed, or the time elapsed). Returns
        whether the server was ejected."""
        self._errors.pop((pool, server), None)
        return self._ejected.pop((pool, server), None) is not None

    def next_deadline(self) -> float | None:
        """When the earliest timed ejection ends, or None."""
        return min((e.until for e in self._ejected.values() if e.until is not None), default=None)

    def due(self, now: float) -> list[Key]:
        """Timed ejections that have ended by ``now``."""
        return sorted(k for k, e in self._ejected.items() if e.until is not None and e.until <= now)

    def forget(self, pool: str, server: str | None = None) -> None:
        """Drop the state of a server (or of a whole pool) that went away."""
        for d in (self._errors, self._ejected):
            for k in [k for k in d if k[0] == pool and (server is None or k[1] == server)]:
                del d[k]  # type: ignore[attr-defined]
