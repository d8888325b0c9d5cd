"""``ovf``: overflow (LVS).

Traffic goes to the highest-weight server (ties: the name that sorts first) as long as
its open connections are below its weight; then to the next one, and so on. The weight
is the connection limit. When every server has as many connections as its weight, the
pick is None (LVS refuses the connection).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Picker, Target, register

__all__ = ["OverflowPicker"]


class OverflowPicker(Picker):
    """The first server, by (weight descending, name), with fewer connections than its weight."""

    algorithm = "ovf"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self.order: tuple[int, ...] = tuple(sorted(range(len(self.targets)),
                                                   key=lambda i: (-self.weights[i], self.names[i])))

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        avoid_i = self.index.get(avoid, -1) if avoid is not None else -1
        fallback = -1
        for i in self.order:
            if self.conns[i] < self.weights[i]:
                if i != avoid_i:
                    return self.targets[i]
                fallback = i
        return self.targets[fallback] if fallback >= 0 else None


register(Algorithm(
    name="ovf",
    factory=OverflowPicker,
    summary="overflow: the highest-weight server until its connections reach its weight, then the next",
    origin="LVS ovf",
    counts=True,
))
