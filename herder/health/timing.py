"""When checks run: inter, fastinter, downinter, timeout and spread, with HAProxy's semantics.

Theory of operation
-------------------
HAProxy schedules the next check of a server when the current one *completes*, after an
interval that depends on where the server's rise/fall counter stands
(``srv_getinter()`` in ``check.c``):

* fully UP (counter at the top): ``inter``;
* fully DOWN (counter at 0): ``downinter``, else ``inter``;
* in transition (either direction): ``fastinter``, else ``inter``.

``timeout`` bounds one whole check (connect plus answer); without it HAProxy bounds a
check by ``inter``, and so does herder. Because the next check is scheduled from the end
of the current one, a slow server never has two checks in flight.

Spreading, so that checks of many servers do not fire together:

* at start (and whenever a batch of servers appears at once) the first checks of ``n``
  servers are staggered evenly over the interval, as HAProxy's ``start_checks()`` does;
* every interval gets a random ``+/- spread_checks`` percent (HAProxy's global
  ``spread-checks``, 0..50, default 0; Envoy calls it ``interval_jitter_percent``).

Defaults are HAProxy's: inter 2 s, rise 2, fall 3.

This module is pure: randomness and time are arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from herder.health.hysteresis import Hysteresis

__all__ = ["DEFAULT_FALL", "DEFAULT_INTER", "DEFAULT_RISE", "CheckTiming", "stagger"]

DEFAULT_INTER = 2.0
DEFAULT_RISE = 2
DEFAULT_FALL = 3


@dataclass(frozen=True, slots=True)
class CheckTiming:
    """The timing keys of one check, in seconds. ``None`` means "use ``inter``"."""

    inter: float = DEFAULT_INTER
    fastinter: float | None = None
    downinter: float | None = None
    timeout: float | None = None
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL
    #: Random +/- percent applied to every interval (0..50).
    spread_checks: int = 0

    def __post_init__(self) -> None:
        for name in ("inter", "fastinter", "downinter", "timeout"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")
        if not 0 <= self.spread_checks <= 50:
            raise ValueError(f"spread_checks {self.spread_checks} is outside 0..50")

    @classmethod
    def from_spec(cls, spec: Mapping[str, object]) -> CheckTiming:
        """The timing of a parsed check mapping (missing keys take the defaults)."""
        def f(key: str) -> float | None:
            v = spec.get(key)
            return None if v is None else float(v)  # type: ignore[arg-type]

        inter = f("inter")
        return cls(
            inter=DEFAULT_INTER if inter is None else inter,
            fastinter=f("fastinter"),
            downinter=f("downinter"),
            timeout=f("timeout"),
            rise=int(spec.get("rise") or DEFAULT_RISE),  # type: ignore[call-overload]
            fall=int(spec.get("fall") or DEFAULT_FALL),  # type: ignore[call-overload]
            spread_checks=int(spec.get("spread_checks") or 0),  # type: ignore[call-overload]
        )

    @property
    def check_timeout(self) -> float:
        """The bound of one check: ``timeout``, else ``inter`` (HAProxy without ``timeout check``)."""
        return self.timeout if self.timeout is not None else self.inter

    def interval(self, hyst: Hysteresis) -> float:
        """The pause after a check, before spreading (HAProxy ``srv_getinter``)."""
        if hyst.health == hyst.top and hyst.up:
            return self.inter
        if hyst.health == 0:
            return self.downinter if self.downinter is not None else self.inter
        return self.fastinter if self.fastinter is not None else self.inter

    def next_delay(self, hyst: Hysteresis, rand: float) -> float:
        """The pause after a check, with spread: ``interval * (1 + p * (1 - 2 * rand))``.

        Args:
            hyst: the counter after the check that just completed.
            rand: a uniform random number in ``[0, 1)``.
        """
        base = self.interval(hyst)
        if not self.spread_checks:
            return base
        return base * (1.0 + self.spread_checks / 100.0 * (1.0 - 2.0 * rand))


def stagger(index: int, count: int, interval: float, rand: float = 0.0, spread_checks: int = 0) -> float:
    """The delay of the first check of the ``index``-th of ``count`` servers that appeared
    together: evenly over ``interval`` (HAProxy ``start_checks``), plus spread.

    >>> [stagger(i, 4, 2.0) for i in range(4)]
    [0.0, 0.5, 1.0, 1.5]
    """
    if count <= 0 or not 0 <= index < count:
        raise ValueError(f"index {index} is outside 0..{count - 1}")
    base = interval * index / count
    if spread_checks:
        base += interval / count * spread_checks / 100.0 * rand
    return base
