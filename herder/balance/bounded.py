"""Bounded loads for any hashing algorithm (Mirrokni, Thorup and Zadimoghaddam,
"Consistent Hashing with Bounded Loads", SODA 2018; HAProxy ``hash-balance-factor``;
Envoy's ``BoundedLoadHashingLoadBalancer``).

Theory of operation
-------------------
A wrapper, not a subclass: it takes any :class:`~herder.balance.base.HashPicker` and
walks that algorithm's ranking for the key (clockwise on the ring, by score for
rendezvous, by re-hashing for Maglev and map-based hash) until it finds a server below
its capacity. With ``factor`` in percent (HAProxy's spelling: 125 means 1.25) and ``L``
the open connections over all servers, server i's capacity for the next request is
``ceil(factor/100 * (L + 1) * w_i / sum(w))``. Since the capacities add up to more than
``L``, some server always has room, and no server exceeds ``factor/100`` times its fair
share. Keys stay on their hashed server while it has room, so the cache locality of
consistent hashing is kept except for the overflow.

The wrapper owns the connection counters (:meth:`on_connect`/:meth:`on_release`); its
table is the inner picker's (``picker.inner.table`` for Maglev).
"""

from __future__ import annotations

from herder.balance.base import HashPicker, Picker, Target

__all__ = ["BoundedLoad"]


class BoundedLoad(Picker):
    """First server in the key's ranking whose open connections are below its capacity."""

    keyed = True

    def __init__(self, inner: HashPicker, factor: int, previous: Picker | None = None) -> None:
        if factor < 100:
            raise ValueError(f"hash_balance_factor {factor} must be at least 100")
        super().__init__(inner.targets, inner.options, previous)
        self.inner = inner
        self.algorithm = inner.algorithm
        self.factor = factor
        self._open = sum(self.conns)

    def capacity(self, i: int) -> int:
        """How many open connections target ``i`` may have for the next request."""
        den = 100 * self.total_weight
        return (self.factor * (self._open + 1) * self.weights[i] + den - 1) // den

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        inner = self.inner
        h = inner.hash_key(key)
        n = len(self.targets)
        avoid_i = self.index.get(avoid, -1) if (avoid is not None and n > 1) else -1
        skip = attempt % n
        fallback = -1
        for rank, i in enumerate(inner.ranked(h)):
            if rank < skip or i == avoid_i:
                continue
            if fallback < 0:
                fallback = i
            if self.conns[i] < self.capacity(i):
                return self.targets[i]
        if fallback < 0:
            fallback = next(i for i in inner.ranked(h) if i != avoid_i)
        return self.targets[fallback]

    def on_connect(self, name: str) -> None:
        i = self.index.get(name)
        if i is not None:
            self.conns[i] += 1
            self._open += 1

    def on_release(self, name: str) -> None:
        i = self.index.get(name)
        if i is not None and self.conns[i] > 0:
            self.conns[i] -= 1
            self._open -= 1
