"""A small shared HTTP cache (RFC 9111), as HAProxy's ``cache`` section provides.

What is stored: complete ``200`` responses to ``GET`` with a Content-Length no larger
than ``max_object_size``, unless the response says ``no-store`` or ``private`` (or
``no-cache``, which would need revalidation, not implemented), carries ``Set-Cookie``, or
varies on everything (``Vary: *``). Freshness: ``s-maxage``, else ``max-age``, else
``Expires`` minus ``Date``, else the cache's ``max_age``; never more than ``max_age``
(HAProxy caps it the same way). A response that varies is stored per value of the
headers it names.

What is served: a fresh entry for a ``GET`` or ``HEAD`` without ``Authorization``, and
without ``Cache-Control: no-cache``/``no-store`` or ``Pragma: no-cache`` (the client asks
for a fresh answer), with an ``Age`` header added.

Eviction: least recently used first, by bytes. Pure: time is an argument.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Cache", "CachePolicy", "Entry", "freshness"]

_DIRECTIVE = re.compile(rb"([a-z-]+)(?:=\"?([^\",]*)\"?)?")


@dataclass(frozen=True)
class CachePolicy:
    total_max_size: int = 64 * 1024 * 1024
    max_object_size: int = 1024 * 1024
    max_age: float = 60.0


@dataclass(slots=True)
class Entry:
    head: bytes  # the response head as sent to the client, without the final blank line
    body: bytes
    stored_at: float
    fresh_for: float
    vary: tuple[bytes, ...]
    vary_values: tuple[bytes | None, ...]

    @property
    def size(self) -> int:
        return len(self.head) + len(self.body) + 64


def _directives(value: bytes | None) -> dict[bytes, bytes]:
    if not value:
        return {}
    return {m.group(1): m.group(2) or b"" for m in _DIRECTIVE.finditer(value.lower())}


def freshness(cache_control: bytes | None, expires_minus_date: float | None, default: float) -> float | None:
    """Seconds a response stays fresh, or None when it must not be stored."""
    d = _directives(cache_control)
    if b"no-store" in d or b"private" in d or b"no-cache" in d:
        return None
    for k in (b"s-maxage", b"max-age"):
        if k in d:
            try:
                return min(float(d[k]), default)
            except ValueError:
                return None
    if expires_minus_date is not None:
        return max(0.0, min(expires_minus_date, default))
    return default


def request_bypasses(cache_control: bytes | None, pragma: bytes | None, authorization: bool) -> bool:
    """True when a request must not be answered from the cache."""
    if authorization:
        return True
    d = _directives(cache_control)
    return b"no-cache" in d or b"no-store" in d or (pragma is not None and b"no-cache" in pragma.lower())


class Cache:
    """The store: key (host, target) -> entries (one per Vary value set)."""

    def __init__(self, policy: CachePolicy) -> None:
        self.policy = policy
        self._lru: OrderedDict[tuple[bytes, bytes], list[Entry]] = OrderedDict()
        self.size = 0
        self.hits = 0
        self.misses = 0

    def lookup(self, host: bytes, target: bytes, header, now: float) -> Entry | None:
        """A fresh entry for this request (``header(name) -> bytes | None``), or None."""
        key = (host.lower(), target)
        entries = self._lru.get(key)
        if entries:
            for e in entries:
                if now - e.stored_at > e.fresh_for:
                    continue
                if all(header(v) == val for v, val in zip(e.vary, e.vary_values, strict=True)):
                    self._lru.move_to_end(key)
                    self.hits += 1
                    return e
        self.misses += 1
        return None

    def store(self, host: bytes, target: bytes, entry: Entry) -> None:
        if entry.size > self.policy.max_object_size + len(entry.head) + 64:
            return
        key = (host.lower(), target)
        entries = self._lru.setdefault(key, [])
        for old in [e for e in entries if e.vary_values == entry.vary_values]:
            entries.remove(old)
            self.size -= old.size
        entries.append(entry)
        self.size += entry.size
        self._lru.move_to_end(key)
        while self.size > self.policy.total_max_size and self._lru:
            _, gone = self._lru.popitem(last=False)
            self.size -= sum(e.size for e in gone)

    def __len__(self) -> int:
        return sum(len(v) for v in self._lru.values())
