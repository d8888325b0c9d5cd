"""``first``: fill servers one after the other (HAProxy ``first``).

The first server, in natural name order (``s2`` before ``s10``), that has room takes the
request. A server has room below its ``maxconn`` (``Server.meta["maxconn"]``, else the
pool's ``maxconn`` option); HAProxy orders by server id, herder by name, so that the
order does not depend on how servers were listed. The point is to use as few servers as
possible, so that the others can be powered down. Weights are ignored (0 still
excludes).

Without any ``maxconn`` every request goes to the first server. When all servers are
full the pick is None: HAProxy queues the request in the backend; herder's caller
decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Option, Picker, Target, register
from herder.balance.fo import limits

__all__ = ["FirstPicker", "natural_key"]


def natural_key(name: str) -> tuple:
    """Sort key ordering embedded numbers by value: ``s2`` < ``s10``."""
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p)


class FirstPicker(Picker):
    """The first server in natural name order that is below its connection limit."""

    algorithm = "first"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self.order: tuple[int, ...] = tuple(sorted(range(len(self.targets)),
                                                   key=lambda i: natural_key(self.names[i])))
        self.limits = limits(self.targets, self.options)

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        avoid_i = self.index.get(avoid, -1) if avoid is not None else -1
        fallback = -1
        for i in self.order:
            lim = self.limits[i]
            if lim is None or self.conns[i] < lim:
                if i != avoid_i:
                    return self.targets[i]
                fallback = i
        return self.targets[fallback] if fallback >= 0 else None


register(Algorithm(
    name="first",
    factory=FirstPicker,
    summary="the first server (natural name order) below its maxconn takes the request",
    origin="HAProxy first",
    counts=True,
    options=(Option("maxconn", int, None, "connection limit of servers without their own maxconn", minimum=1),),
))
