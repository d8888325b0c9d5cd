"""``random``: weighted random choice (nginx ``random``).

Each pick draws a server with probability ``weight / sum(weights)`` (a uniform draw
located in the cumulative weights by bisection). With a key, the key's mixed hash is the
draw, so the choice is reproducible (the simulator and tests rely on it); without one,
the picker's own generator draws (seeded from ``seed`` when given, else from the OS).

A retry with ``avoid`` draws among the other servers only, still weighted.

HAProxy's ``balance random`` draws twice and keeps the less loaded server by default
(``random(2)``); herder's ``random`` draws once, as nginx's does. Write ``random(2)``,
``p2c`` or nginx's ``random two`` for the power of two choices (:mod:`~herder.balance.p2c`).
"""

from __future__ import annotations

import random as _random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate

from herder.balance.base import Algorithm, Option, Picker, Target, register
from herder.balance.hashing import M64, mix64, rehash

__all__ = ["RandomPicker"]


class RandomPicker(Picker):
    """Weighted random draws."""

    counts_load = False

    algorithm = "random"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self._cum = list(accumulate(self.weights))
        seed = self.options.get("seed")
        self._rng = _random.Random(seed)

    def _draw(self, key: int | None, n: int) -> int:
        """A uniform integer in [0, n): from the key's n-th hash, or the generator."""
        if key is None:
            return self._rng.randrange(n)
        return (key * n) >> 64

    def _locate(self, u: int, exclude: int = -1) -> int:
        """The target the draw ``u`` falls on (``u`` in [0, total - w_exclude))."""
        if exclude >= 0 and u >= self._cum[exclude] - self.weights[exclude]:
            u += self.weights[exclude]
        return bisect_right(self._cum, u)

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        h = None
        if key is not None:
            h = mix64(key & M64)
            if attempt:
                h = rehash(h, attempt)
        i = self._locate(self._draw(h, self.total_weight))
        if avoid is not None and len(self.targets) > 1 and self.names[i] == avoid:
            h2 = None if h is None else rehash(h, 1 << 20)
            i = self._locate(self._draw(h2, self.total_weight - self.weights[i]), exclude=i)
        return self.targets[i]


register(Algorithm(
    name="random",
    factory=RandomPicker,
    summary="weighted random choice; with a key, the key is the draw (reproducible)",
    origin="nginx random",
    default_key="none",
    options=(Option("seed", int, None, "seed of the picker's generator (default: from the OS)"),),
))
