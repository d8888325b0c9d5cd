"""``fo``: weighted failover (LVS).

All traffic goes to the usable server with the highest weight (ties: the name that
sorts first); the next one takes over only when it is gone or full. Servers are full at
their ``maxconn`` (``Server.meta["maxconn"]``, else the pool's ``maxconn`` option; none
by default), which plays the part of LVS's overload flag. When every server is full the
pick is None: the caller queues or refuses, as LVS drops.

Compare backup servers (``backup = true``), which take over only when *no* active server
is usable, and ``first``, which fills servers in name order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Option, Picker, Target, register

__all__ = ["FailoverPicker", "limits"]


def limits(targets: Sequence[Target], options: Mapping[str, object]) -> list[int | None]:
    """Per-target connection limit: the server's own maxconn, else the pool's option."""
    default = options.get("maxconn")
    return [t.maxconn if t.maxconn is not None else default for t in targets]  # type: ignore[misc]


class FailoverPicker(Picker):
    """The first server, by (weight descending, name), that is not full."""

    algorithm = "fo"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self.order: tuple[int, ...] = tuple(sorted(range(len(self.targets)),
                                                   key=lambda i: (-self.weights[i], self.names[i])))
        self.limits = limits(self.targets, self.options)

    def _room(self, i: int) -> bool:
        lim = self.limits[i]
        return lim is None or self.conns[i] < lim

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        avoid_i = self.index.get(avoid, -1) if avoid is not None else -1
        fallback = -1
        for i in self.order:
            if self._room(i):
                if i != avoid_i:
                    return self.targets[i]
                fallback = i
        return self.targets[fallback] if fallback >= 0 else None


register(Algorithm(
    name="fo",
    factory=FailoverPicker,
    summary="weighted failover: everything to the highest-weight server that is not full",
    origin="LVS fo",
    counts=True,
    options=(Option("maxconn", int, None, "connection limit of servers without their own maxconn", minimum=1),),
))
