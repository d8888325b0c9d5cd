"""``static-rr``: a precomputed weighted schedule walked by a cursor (HAProxy ``static-rr``).

Theory of operation
-------------------
The build lays the servers out in a map where each appears in proportion to its weight,
evenly interleaved (:func:`herder.balance.base.interleave`, Webster's divisor method),
and a pick returns the next map entry. The map is plain data, the same form as the
map-based ``hash`` uses. Over one pass of the map every server gets exactly its weight's
share (weights are first divided by their greatest common divisor; a map longer than
``map_limit`` entries is scaled down, which rounds small weights up to one entry).

HAProxy's ``static-rr`` differs from its ``roundrobin`` in being static: weight changes
apply only on the next build, and there is no server-count limit. In herder both are
rebuilt on every pool change; this one has O(1) picks for any weights, where
``roundrobin`` is O(N) with unequal weights.

Mutable state, owned by the picker: the cursor (carried over to the next picker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Option, Picker, Target, interleave, register

__all__ = ["StaticRoundRobinPicker"]


class StaticRoundRobinPicker(Picker):
    """A cursor over a weighted, interleaved map."""

    counts_load = False

    algorithm = "static-rr"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        limit = int(self.options.get("map_limit", 1 << 16))  # type: ignore[call-overload]
        self.map: tuple[int, ...] = tuple(interleave(self.weights, limit).tolist())
        self._pos = previous._pos % len(self.map) if isinstance(previous, StaticRoundRobinPicker) else 0

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        m = self.map
        size = len(m)
        pos = self._pos
        i = m[pos]
        if avoid is not None and len(self.targets) > 1 and self.names[i] == avoid:
            for step in range(1, size + 1):
                j = m[(pos + step) % size]
                if j != i:
                    pos = (pos + step) % size
                    i = j
                    break
        self._pos = (pos + 1) % size
        return self.targets[i]


register(Algorithm(
    name="static-rr",
    factory=StaticRoundRobinPicker,
    summary="weighted round robin over a precomputed interleaved map; O(1) per pick",
    origin="HAProxy static-rr",
    options=(Option("map_limit", int, 1 << 16, "longest map; weights are scaled down beyond it", minimum=1),),
))
