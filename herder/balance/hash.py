"""``hash``: map-based hashing (HAProxy ``hash-type map-based``, LVS ``sh``/``dh``, nginx ``hash``).

Theory of operation
-------------------
The build lays the servers out in a map where each appears in proportion to its weight
(:func:`herder.balance.base.interleave`), and a key picks entry ``hash % len(map)``,
as HAProxy's map-based selector does with ``key % tot_weight``. Shares follow the
weights exactly (up to key uniformity), lookups are O(1), and the map is plain data.

The price: any change of the server set or weights changes the map's length, which
moves almost every key (with N servers, about (N-1)/N of them). ``herder balance
simulate --algorithms hash,ring,maglev`` shows it. When keys must stay put, use
``hash_type = "consistent"`` (which resolves to :mod:`herder.balance.ring`, as HAProxy's
``hash-type consistent`` does), ``maglev`` or ``rendezvous``.

The aliases preset the key: ``source`` and ``sh`` hash the client address, ``dh`` the
destination, ``uri``, ``url_param``, ``hdr(NAME)`` and ``cookie(NAME)`` the request;
nginx's ``ip_hash`` hashes the first three octets of an IPv4 client address. LVS's
``sh`` uses a fixed table of 256 buckets; herder's map has one entry per weight unit
(after dividing by the weights' gcd), as HAProxy's does.

A retry walks the map forward from the key's entry to the next different server.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from herder.balance.base import (
    Algorithm,
    HashPicker,
    Option,
    Picker,
    Target,
    interleave,
    register,
    register_alias,
)
from herder.balance.hashing import mix64_array

__all__ = ["MapHashPicker"]


class MapHashPicker(HashPicker):
    """``map[hash % len(map)]`` over a weighted interleaved map."""

    algorithm = "hash"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        limit = int(self.options.get("map_limit", 1 << 16))  # type: ignore[call-overload]
        self.map_array = interleave(self.weights, limit)
        self.map_array.setflags(write=False)
        self.map: tuple[int, ...] = tuple(self.map_array.tolist())

    def _lookup(self, h: int) -> int:
        return self.map[h % len(self.map)]

    def _candidates(self, h: int) -> Iterator[int]:
        m = self.map
        size = len(m)
        p = h % size
        for j in range(size):
            yield m[(p + j) % size]

    def _candidate_limit(self) -> int:
        return len(self.map)

    def lookup_many(self, keys: np.ndarray) -> np.ndarray:
        return self.map_array[mix64_array(keys) % np.uint64(len(self.map))].astype(np.int64)

    def ownership(self) -> np.ndarray:
        return np.bincount(self.map_array, minlength=len(self.targets)) / len(self.map)


register(Algorithm(
    name="hash",
    factory=MapHashPicker,
    summary="map-based hashing: key modulo a weighted map; exact shares, but any change moves most keys",
    origin="HAProxy hash-type map-based, LVS sh/dh, nginx hash",
    keyed=True,
    default_key="source",
    options=(Option("map_limit", int, 1 << 16, "longest map; weights are scaled down beyond it", minimum=1),),
))
register_alias("source", "hash", "HAProxy", key="source")
register_alias("uri", "hash", "HAProxy", key="uri")
register_alias("url_param", "hash", "HAProxy", note="url_param NAME", key=None)
register_alias("hdr", "hash", "HAProxy", note="hdr(NAME)", key=None)
register_alias("cookie", "hash", "herder", note="cookie(NAME): nginx `hash $cookie_NAME`", key=None)
register_alias("sh", "hash", "ipvsadm", key="source")
register_alias("dh", "hash", "ipvsadm", key="destination")
register_alias("ip_hash", "hash", "nginx", note="first three octets of IPv4 addresses", key="source", prefix=24)
