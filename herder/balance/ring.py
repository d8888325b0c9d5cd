"""``ring``: consistent hashing on a ketama ring (Karger et al. 1997; libketama points).

Theory of operation
-------------------
Every server puts points on a 32-bit circle; a key goes to the first point at or after
its own position, wrapping around. Removing a server removes only its points, so only
its keys move (to the next point clockwise); adding one takes over only the arcs just
before its new points.

Points are libketama's: MD5 of ``"<name>-<k>"`` for k = 0, 1, ..., four little-endian
32-bit points per digest. libketama gives each server ``floor(40 * N * w / sum(w))``
digests (160 points for equal weights); herder gives ``points * weight`` points
(``points = 160`` by default), which is the same ring for weight-1 servers, and keeps a
server's points fixed when *other* servers come and go, so removing one server moves
only its keys for any weights. When the total would exceed ``max_points``, every
server's count is scaled down by the same factor (each keeps at least one point); the
scale then depends on the pool, and a change can move a few more keys.

The key's position is the top 32 bits of its mixed 64-bit hash (not MD5 of a string as
in memcached clients: herder's keys are integers).

Balance is the weak point: with 160 points per server, servers' shares vary by about
``1/sqrt(160)``, roughly 8%, around their fair share (see ``herder balance simulate``
and the Maglev paper, Figure 11). More points help, slowly; :mod:`~herder.balance.maglev`
balances within one table slot.

A retry walks clockwise to the next point of a server not tried yet; the bounded-load
wrapper does the same, as HAProxy's ``hash-balance-factor`` does on its chash tree.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from herder.balance.base import Algorithm, HashPicker, Option, Picker, Target, register, register_alias
from herder.balance.hashing import ketama_points, mix64_array

__all__ = ["RingPicker"]


class RingPicker(HashPicker):
    """Ketama ring: sorted 32-bit points, each owned by a target index."""

    algorithm = "ring"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        per = int(self.options.get("points", 160))  # type: ignore[call-overload]
        cap = int(self.options.get("max_points", 1 << 20))  # type: ignore[call-overload]
        counts = [per * w for w in self.weights]
        total = sum(counts)
        if total > cap:
            counts = [max(1, c * cap // total) for c in counts]
        pts: list[int] = []
        owners: list[np.ndarray] = []
        for i, (name, c) in enumerate(zip(self.names, counts, strict=True)):
            pts.extend(ketama_points(name, c))
            owners.append(np.full(c, i, dtype=np.int32))
        p = np.array(pts, dtype=np.int64)
        o = np.concatenate(owners)
        order = np.lexsort((o, p))
        self.points_array = p[order]
        self.owners_array = o[order]
        self.points_array.setflags(write=False)
        self.owners_array.setflags(write=False)
        self._points = self.points_array.tolist()
        self._owners = self.owners_array.tolist()

    def _lookup(self, h: int) -> int:
        i = bisect_left(self._points, h >> 32)
        return self._owners[i if i < len(self._owners) else 0]

    def _candidates(self, h: int) -> Iterator[int]:
        owners = self._owners
        size = len(owners)
        i = bisect_left(self._points, h >> 32)
        for j in range(size):
            yield owners[(i + j) % size]

    def _candidate_limit(self) -> int:
        return len(self._owners)

    def lookup_many(self, keys: np.ndarray) -> np.ndarray:
        pos = (mix64_array(keys) >> np.uint64(32)).astype(np.int64)
        i = np.searchsorted(self.points_array, pos, side="left")
        i[i == len(self.points_array)] = 0
        return self.owners_array[i].astype(np.int64)

    def ownership(self) -> np.ndarray:
        p = self.points_array
        arcs = np.diff(p, prepend=p[-1] - (1 << 32))
        return np.bincount(self.owners_array, weights=arcs, minlength=len(self.targets)) / float(1 << 32)


register(Algorithm(
    name="ring",
    factory=RingPicker,
    summary="consistent hashing on a ketama ring: removing a server moves only its keys; shares vary ~8%",
    origin="libketama, HAProxy hash-type consistent, nginx hash ... consistent",
    keyed=True,
    default_key="source",
    options=(
        Option("points", int, 160, "ring points per unit of weight (libketama: 160)", minimum=1),
        Option("max_points", int, 1 << 20, "most points on the ring; counts are scaled down beyond", minimum=1),
    ),
))
register_alias("ketama", "ring", "herder")
register_alias("consistent", "ring", "herder")
register_alias("ring-hash", "ring", "Envoy")
