"""``rendezvous``: highest random weight hashing (Thaler and Ravishankar, 1998).

Theory of operation
-------------------
For a key, every server gets a pseudo-random score from the pair (key, server); the
highest score wins. A server's removal moves only the keys it won (every other key's
winner is still there and still highest); an added server takes exactly the keys it now
wins, about 1/(N+1) of them. No table: the picker holds one 64-bit seed per server
(BLAKE2b of its name), and a pick costs O(N).

Score: ``mix64(hash(key) XOR seed)``. With unequal weights the score becomes
``w / -ln(u)``, where ``u`` in (0, 1) is the score's top 53 bits (the logarithmic method
of Schindelhauer and Schomaker, 2005): each server then wins with probability
``w / sum(w)`` exactly, and the minimal-disruption property holds for any weights.
Ties (equal 64-bit scores) go to the lower index, i.e. the name that sorts first.

The ranking of all servers by score is the key's preference order: a retry takes the
next-highest, and bounded loads walk down the ranking.

Above 48 servers the scores are computed with numpy, one vector per pick; the simulator
uses the same vector code for many keys at once. Equal weights compare integers only, so
both paths agree bit for bit; unequal weights compare floats from ``math.log`` (small
pools) or ``numpy.log`` (large pools), which can differ in the last bit: a pick can
differ between the two paths only for two scores within one ulp of each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from herder.balance.base import Algorithm, HashPicker, Picker, Target, register, register_alias
from herder.balance.hashing import hash_name, mix64, mix64_array

__all__ = ["RendezvousPicker"]

_NUMPY_ABOVE = 48
_TWO53 = 2.0 ** -53


class RendezvousPicker(HashPicker):
    """Highest (weighted) score of (key, server) wins."""

    algorithm = "rendezvous"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self.seeds: tuple[int, ...] = tuple(hash_name(n, "herder-hrw") for n in self.names)
        self._seeds_np = np.array(self.seeds, dtype=np.uint64)
        self._uniform = len(set(self.weights)) == 1
        self._w_np = np.array(self.weights, dtype=np.float64)
        self._big = len(self.targets) > _NUMPY_ABOVE

    def _scores_np(self, h: int) -> np.ndarray:
        z = mix64_array(self._seeds_np ^ np.uint64(h))
        if self._uniform:
            return z
        return self._weighted(z)

    def _weighted(self, z: np.ndarray) -> np.ndarray:
        u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO53
        return self._w_np / -np.log(u)

    def _lookup(self, h: int) -> int:
        if self._big:
            return int(self._scores_np(h).argmax())
        best, bv = 0, -1.0
        if self._uniform:
            for i, s in enumerate(self.seeds):
                v = mix64(h ^ s)
                if v > bv:
                    best, bv = i, v
            return best
        for i, (s, w) in enumerate(zip(self.seeds, self.weights, strict=True)):
            v = w / -math.log(((mix64(h ^ s) >> 11) + 0.5) * _TWO53)
            if v > bv:
                best, bv = i, v
        return best

    def _candidates(self, h: int) -> Iterator[int]:
        if self._big or not self._uniform:
            scores = self._scores_np(h)
        else:
            scores = np.array([mix64(h ^ s) for s in self.seeds], dtype=np.uint64)
        # Descending score, ties by index: a stable sort of the negated ranks.
        order = np.argsort(-scores.astype(np.float64) if not self._uniform else ~scores, kind="stable")
        yield from order.tolist()

    def _candidate_limit(self) -> int:
        return len(self.targets)

    def lookup_many(self, keys: np.ndarray) -> np.ndarray:
        hk = mix64_array(keys)
        n = len(self.targets)
        out = np.empty(len(hk), dtype=np.int64)
        step = max(1, (1 << 21) // n)
        for a in range(0, len(hk), step):
            z = mix64_array(hk[a:a + step, None] ^ self._seeds_np[None, :])
            if not self._uniform:
                z = self._weighted(z)
            out[a:a + step] = z.argmax(axis=1)
        return out


register(Algorithm(
    name="rendezvous",
    factory=RendezvousPicker,
    summary="highest random weight: removing a server moves only its keys; no table, O(N) per pick",
    origin="Thaler & Ravishankar 1998 (HRW)",
    keyed=True,
    default_key="source",
))
register_alias("hrw", "rendezvous", "herder")
register_alias("highest-random-weight", "rendezvous", "herder")
