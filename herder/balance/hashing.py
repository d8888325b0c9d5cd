"""Fixed hash functions: the same input gives the same value in every process, forever.

Theory of operation
-------------------
Python's built-in ``hash()`` is salted per process (``PYTHONHASHSEED``), so two herder
processes, or one herder before and after a restart, would disagree about where a key
goes. Nothing in :mod:`herder.balance` uses it. Instead:

* **integers** (keys, already 64-bit hashes) go through :func:`mix64`, the finalizer of
  splitmix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
  OOPSLA 2014; constants from Stafford's "Mix13"). It is a bijection on 64-bit integers
  with full avalanche, so keys that differ in one bit land far apart, and it costs a few
  integer operations. :func:`mix64_array` is the same function over a numpy ``uint64``
  array; both give bit-identical results.
* **bytes and strings** (server names, addresses, URIs, header values) go through
  BLAKE2b with an 8-byte digest (:func:`hash_bytes`), read little-endian. hashlib's C
  implementation is fast, stable across platforms and versions, and the ``person``
  parameter gives each use its own independent function (:func:`hash_name`), so a
  server's Maglev offset, its Maglev skip and its rendezvous seed are unrelated.
* **ring points** use MD5 exactly as libketama does (:func:`ketama_points`), so that a
  ring built from the same names has the same points as memcached clients' rings.

These values are part of herder's stable behaviour: changing any of them moves keys
between servers on upgrade. The unit tests pin known outputs.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

__all__ = [
    "M64",
    "hash_bytes",
    "hash_name",
    "ketama_points",
    "mix64",
    "mix64_array",
    "rehash",
]

#: Mask of a 64-bit unsigned integer.
M64 = (1 << 64) - 1

_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def mix64(x: int) -> int:
    """Mix a 64-bit integer (splitmix64's output function); a bijection on 0..2**64-1.

    Any Python int is accepted; it is reduced modulo 2**64 first (negative numbers in
    two's complement), so ``mix64(-1) == mix64(2**64 - 1)``.
    """
    z = (x + _GOLDEN) & M64
    z = ((z ^ (z >> 30)) * _C1) & M64
    z = ((z ^ (z >> 27)) * _C2) & M64
    return z ^ (z >> 31)


def mix64_array(a: np.ndarray) -> np.ndarray:
    """:func:`mix64` over an array (converted to ``uint64``); returns a new array."""
    z = np.asarray(a, dtype=np.uint64) + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def rehash(h: int, n: int) -> int:
    """The ``n``-th derived hash of ``h`` (``n >= 1``), for retries and extra draws."""
    return mix64(h + n * _GOLDEN)


def hash_bytes(data: bytes | str, person: bytes = b"") -> int:
    """A 64-bit hash of ``data`` (BLAKE2b, 8-byte digest, little-endian).

    ``str`` is encoded as UTF-8 (lone surrogates kept with ``surrogateescape``).
    ``person`` (at most 16 bytes) selects an independent hash function.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=person).digest(), "little")


def hash_name(name: str, purpose: str) -> int:
    """A 64-bit hash of a server name for one ``purpose`` (e.g. ``"maglev-offset"``)."""
    return hash_bytes(name, person=purpose.encode("ascii")[:16])


def ketama_points(name: str, count: int) -> list[int]:
    """The first ``count`` libketama ring points of server ``name``.

    libketama hashes ``"<name>-<k>"`` with MD5 for k = 0, 1, ... and takes four 32-bit
    points from each digest, bytes 4h..4h+3 read little-endian (h = 0..3).
    """
    out: list[int] = []
    md5 = hashlib.md5
    unpack = _FOUR_LE.unpack
    for k in range((count + 3) // 4):
        out.extend(unpack(md5(f"{name}-{k}".encode("utf-8", "surrogateescape")).digest()))
    del out[count:]
    return out


_FOUR_LE = struct.Struct("<4I")
