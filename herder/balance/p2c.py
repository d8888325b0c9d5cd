"""``p2c``: the power of two choices (Mitzenmacher, 2001; nginx ``random two least_conn``).

Draw ``choices`` distinct servers at random, weighted, and send the request to the one
with the fewest open connections per unit of weight (ties: the first drawn). Two choices
already bring the maximum load from ``log n / log log n`` down to ``log log n``, without
looking at every server, and without the herd effect of least-connections when many
balancers share stale counts.

Counters come from :meth:`Picker.on_connect` / :meth:`Picker.on_release`. Like
``random``, a key makes the draws reproducible. :mod:`~herder.balance.peak_ewma` is
this algorithm with a latency-based load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Option, Picker, Target, register, register_alias
from herder.balance.hashing import M64, mix64, rehash
from herder.balance.random import RandomPicker

__all__ = ["PowerOfChoicesPicker"]


class PowerOfChoicesPicker(RandomPicker):
    """Best of ``choices`` weighted random draws, by :meth:`load`."""

    counts_load = True

    algorithm = "p2c"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self._choices = int(self.options.get("choices", 2))  # type: ignore[call-overload]

    def load(self, i: int) -> float:
        """Load of target ``i``; lower is better. Here: connections per unit of weight."""
        return self.conns[i] / self.weights[i]

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        n = len(self.targets)
        avoid_i = self.index.get(avoid, -1) if (avoid is not None and n > 1) else -1
        want = min(self._choices, n - (avoid_i >= 0))
        h = None
        if key is not None:
            h = mix64(key & M64)
            if attempt:
                h = rehash(h, attempt)
        drawn: list[int] = []
        draw = 0
        while len(drawn) < want and draw < 8 * want + 8:
            hd = None if h is None else (h if draw == 0 else rehash(h, draw))
            i = self._locate(self._draw(hd, self.total_weight))
            draw += 1
            if i != avoid_i and i not in drawn:
                drawn.append(i)
        if len(drawn) < want:  # a target with a tiny weight share: complete in index order
            drawn.extend(i for i in range(n) if i != avoid_i and i not in drawn)
            del drawn[want:]
        best = drawn[0]
        best_load = self.load(best)
        for i in drawn[1:]:
            load = self.load(i)
            if load < best_load:
                best, best_load = i, load
        return self.targets[best]


register(Algorithm(
    name="p2c",
    factory=PowerOfChoicesPicker,
    summary="power of two choices: two weighted random draws, the less loaded wins",
    origin="nginx random two least_conn, HAProxy random(2), Envoy least_request",
    default_key="none",
    counts=True,
    options=(
        Option("choices", int, 2, "how many servers to draw (HAProxy random(<draws>))", minimum=1),
        Option("seed", int, None, "seed of the picker's generator (default: from the OS)"),
    ),
))
register_alias("twos", "p2c", "herder")
register_alias("power-of-two", "p2c", "herder")
register_alias("least-request", "p2c", "Envoy")
