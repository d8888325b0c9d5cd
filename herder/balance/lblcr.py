"""``lblcr``: locality-based least-connection with replication (LVS), for cache clusters.

Like ``lblc``, but a key maps to a *set* of servers: the least loaded member of the set
(wlc) takes the request; when it is overloaded, the least loaded server of the whole
pool joins the set and takes it. A popular destination thus spreads over several caches
while an unpopular one stays on one. When a set with more than one member has not grown
for ``shrink_after`` picks, its most loaded member leaves it (LVS counts 6 minutes; the
picker reads no clock, so it counts picks).

Overloaded is LVS's test (see :mod:`herder.balance.lblc`). The table maps keys to server
names, carries over to the next picker, and is bounded at ``max_entries`` (least
recently used go).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Option, Picker, Target, register
from herder.balance.lblc import LocalityPicker

__all__ = ["ReplicatedLocalityPicker"]


class ReplicatedLocalityPicker(LocalityPicker):
    """Key -> set of servers; grows under overload, shrinks when quiet."""

    algorithm = "lblcr"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        if not isinstance(previous, ReplicatedLocalityPicker):
            self.table = OrderedDict()
        self._shrink_after = int(self.options.get("shrink_after", 10000))  # type: ignore[call-overload]
        self.clock = previous.clock if isinstance(previous, ReplicatedLocalityPicker) else 0

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        n = len(self.targets)
        avoid_i = self.index.get(avoid, -1) if (avoid is not None and n > 1) else -1
        self.clock += 1
        if key is None:
            return self.targets[self.wlc(avoid_i)]
        entry = self.table.get(key)
        if not isinstance(entry, list):
            i = self.wlc(avoid_i)
            self._remember(key, [[self.names[i]], self.clock])
            return self.targets[i]
        names, lastmod = entry
        members = [self.index[m] for m in names if m in self.index]
        i = self.wlc(avoid_i, members) if members else -1
        if len(names) > 1 and self.clock - lastmod > self._shrink_after and members:
            worst = max(members, key=lambda j: self.conns[j] / self.weights[j])
            names.remove(self.names[worst])
            entry[1] = self.clock
        if i < 0 or self.overloaded(i):
            i = self.wlc(avoid_i)
            if self.names[i] not in names:
                names.append(self.names[i])
            entry[1] = self.clock
        self.table.move_to_end(key)
        return self.targets[i]


register(Algorithm(
    name="lblcr",
    factory=ReplicatedLocalityPicker,
    summary="locality-based least-connection with replication: a key's server set grows under load",
    origin="LVS lblcr",
    default_key="destination",
    counts=True,
    options=(
        Option("max_entries", int, 65536, "most keys remembered (least recently used go)", minimum=1),
        Option("shrink_after", int, 10000, "picks after which a quiet set drops its most loaded member",
               minimum=1),
    ),
))
