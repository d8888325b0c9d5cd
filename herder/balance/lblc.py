"""``lblc``: locality-based least-connection (LVS), for cache clusters.

The key (by default the destination address, as LVS uses it) is remembered with the
server it was last sent to, so that requests for the same destination keep hitting the
same cache. A key seen for the first time, or whose server is gone or overloaded, is
assigned by weighted least-connection (``wlc``, first minimum) and remembered.

Overloaded, as in LVS: the server has more open connections than its weight while some
other server has fewer than half of its weight.

The table is state the picker owns; it maps keys to server *names*, so it carries over
to the next picker and survives servers coming and going. LVS expires entries idle for a
day; herder, which reads no clock, bounds the table at ``max_entries`` and drops the
least recently used.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Option, Picker, Target, register

__all__ = ["LocalityPicker"]


class LocalityPicker(Picker):
    """Key -> remembered server, re-assigned by wlc when absent or overloaded."""

    algorithm = "lblc"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self._max = int(self.options.get("max_entries", 65536))  # type: ignore[call-overload]
        self.table: OrderedDict[int, object] = (
            previous.table if isinstance(previous, LocalityPicker) else OrderedDict()
        )

    def overloaded(self, i: int) -> bool:
        """LVS's test: above its weight while another server is below half of its own."""
        if self.conns[i] <= self.weights[i]:
            return False
        return any(2 * c < w for c, w in zip(self.conns, self.weights, strict=True))

    def wlc(self, exclude: int = -1, among: Sequence[int] | None = None) -> int:
        """The first server with the fewest connections per unit of weight."""
        best, bl, bw = -1, 0, 1
        for i in range(len(self.targets)) if among is None else among:
            if i == exclude:
                continue
            c, w = self.conns[i], self.weights[i]
            if best < 0 or c * bw < bl * w:
                best, bl, bw = i, c, w
        return best

    def _remember(self, key: int, value: object) -> None:
        self.table[key] = value
        self.table.move_to_end(key)
        while len(self.table) > self._max:
            self.table.popitem(last=False)

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        n = len(self.targets)
        avoid_i = self.index.get(avoid, -1) if (avoid is not None and n > 1) else -1
        if key is None:
            return self.targets[self.wlc(avoid_i)]
        name = self.table.get(key)
        i = self.index.get(name, -1) if isinstance(name, str) else -1
        if i < 0 or i == avoid_i or self.overloaded(i):
            i = self.wlc(avoid_i)
            self._remember(key, self.names[i])
        else:
            self.table.move_to_end(key)
        return self.targets[i]


register(Algorithm(
    name="lblc",
    factory=LocalityPicker,
    summary="locality-based least-connection: a key sticks to its server until it is overloaded",
    origin="LVS lblc",
    default_key="destination",
    counts=True,
    options=(Option("max_entries", int, 65536, "most keys remembered (least recently used go)", minimum=1),),
))
