"""Rise/fall hysteresis with one counter, as HAProxy's ``check.c`` does it.

Theory of operation
-------------------
One integer, ``health``, runs over ``0 .. rise + fall - 1``. The server is UP iff
``health >= rise``:

* a success increments ``health`` (up to the top); when it reaches ``rise`` it jumps to
  the top, ``rise + fall - 1``: the server is UP and ``fall`` failures away from DOWN;
* a failure decrements ``health``; when it drops below ``rise`` it falls to 0: the server
  is DOWN and ``rise`` successes away from UP.

So a fully UP server goes DOWN after exactly ``fall`` consecutive failures, a fully DOWN
one comes UP after exactly ``rise`` consecutive successes, and a server whose results
alternate never changes state at all once settled (with rise, fall >= 2). While the
counter is strictly between 0 and the top the server is *in transition* ("UP 1/3 going
down", "DOWN 1/2 going up"), which is when HAProxy checks at ``fastinter``.

A server that starts UP without having been checked starts at ``rise`` (HAProxy's "up,
but will fall down at first failure"); one that starts DOWN starts at 0.

This module is pure: no I/O, no clock, nothing but integers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Hysteresis", "is_up", "step"]


def step(health: int, ok: bool, rise: int, fall: int) -> int:
    """The counter after one check result (HAProxy ``set_server_check_status``).

    Args:
        health: the counter before, in ``0 .. rise + fall - 1``.
        ok: whether the check passed.
        rise: successes needed to come UP (>= 1).
        fall: failures needed to go DOWN (>= 1).

    Returns:
        The counter after; ``is_up(result, rise)`` tells the server's state.
    """
    top = rise + fall - 1
    if ok:
        if health < top:
            health += 1
            if health >= rise:
                health = top
        return health
    if health > 0:
        health -= 1
        if health < rise:
            health = 0
    return health


def is_up(health: int, rise: int) -> bool:
    """True when a server with this counter is UP."""
    return health >= rise


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """The rise/fall state of one check of one server; immutable, :meth:`record` returns
    the next value."""

    rise: int
    fall: int
    health: int

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"rise ({self.rise}) and fall ({self.fall}) must be at least 1")
        if not 0 <= self.health <= self.top:
            raise ValueError(f"health {self.health} is outside 0..{self.top}")

    @classmethod
    def start(cls, rise: int, fall: int, up: bool, *, verified: bool = False) -> Hysteresis:
        """The initial counter: DOWN at 0; UP at ``rise`` (falls at the first failure),
        or at the top when ``verified`` (the server was UP under an earlier check run)."""
        if not up:
            return cls(rise, fall, 0)
        return cls(rise, fall, rise + fall - 1 if verified else rise)

    @property
    def top(self) -> int:
        return self.rise + self.fall - 1

    @property
    def up(self) -> bool:
        return self.health >= self.rise

    @property
    def settled(self) -> bool:
        """True when fully UP or fully DOWN (HAProxy checks at ``inter``/``downinter``);
        False in transition (``fastinter``)."""
        return self.health in (0, self.top)

    def record(self, ok: bool) -> Hysteresis:
        """The state after one check result."""
        return Hysteresis(self.rise, self.fall, step(self.health, ok, self.rise, self.fall))

    def forced_down(self) -> Hysteresis:
        """DOWN at once, ``rise`` successes away from UP (HAProxy ``on-error mark-down``)."""
        return Hysteresis(self.rise, self.fall, 0)

    def describe(self) -> str:
        """As HAProxy's stats page shows it: ``UP``; ``UP 2/3`` going down (2 more failures
        of ``fall`` 3 bring it DOWN); ``DOWN``; ``DOWN 1/2`` going up (1 success of ``rise``
        2 seen)."""
        if self.up:
            if self.health == self.top:
                return "UP"
            return f"UP {self.health - self.rise + 1}/{self.fall}"
        if self.health == 0:
            return "DOWN"
        return f"DOWN {self.health}/{self.rise}"
