"""``http-request`` rules and the per-source rate limit: pure decisions on a request.

Rules run in order, as HAProxy runs ``http-request`` rules:

* ``allow`` -- stop evaluating; the request goes on;
* ``deny [status]`` -- stop; answer ``status`` (403 by default);
* ``redirect location|prefix URL [code N]`` -- stop; answer 301/302/303/307/308;
* ``set-header``, ``add-header``, ``del-header`` -- change the request's headers, go on;
* ``set-priority-class N`` -- the request's class in the server queues (lower is served
  first, -2047..2047 as in HAProxy), go on;
* ``track`` -- count the request in the service's rate table (``track-sc0 src``).

A rule applies when it has no condition or its condition holds. The rate limit keeps, per
source address, HAProxy's ``http_req_rate(period)``: the count of the current period plus
the previous period's count weighted by how much of it is still inside the sliding window.
Pure: time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from herder.l7.core.acl import Condition, RequestView

__all__ = ["Decision", "HttpRule", "RateTable", "apply_rules"]

REDIRECT_CODES = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class HttpRule:
    """One ``http-request`` rule. ``name``/``value`` are header name/value (bytes) for the
    header actions, the location for ``redirect`` (``value``), the status for ``deny`` and
    ``redirect`` (``status``), the class for ``set-priority-class`` (``priority``)."""

    action: str
    name: bytes = b""
    value: bytes = b""
    status: int = 0
    priority: int = 0
    prefix: bool = False
    cond: Condition | None = None


@dataclass(slots=True)
class Decision:
    """What the rules decided: answer now (``status`` set) or forward with these headers."""

    status: int = 0
    location: bytes = b""
    priority: int = 0
    track: bool = False


def apply_rules(rules: tuple[HttpRule, ...], view: RequestView, headers: list[tuple[bytes, bytes]]) -> Decision:
    """Run ``rules`` on a request; header actions edit ``headers`` in place."""
    d = Decision()
    for r in rules:
        if r.cond is not None and not r.cond(view):
            continue
        a = r.action
        if a == "allow":
            return d
        if a == "deny":
            d.status = r.status or 403
            return d
        if a == "redirect":
            d.status = r.status or 302
            d.location = r.value + view.target if r.prefix else r.value
            return d
        if a == "set-header":
            lname = r.name.lower()
            headers[:] = [(k, v) for k, v in headers if k.lower() != lname]
            headers.append((r.name, r.value))
        elif a == "add-header":
            headers.append((r.name, r.value))
        elif a == "del-header":
            lname = r.name.lower()
            headers[:] = [(k, v) for k, v in headers if k.lower() != lname]
        elif a == "set-priority-class":
            d.priority = r.priority
        elif a == "track":
            d.track = True
    return d


class RateTable:
    """Requests per source over a sliding period (HAProxy ``http_req_rate``), bounded in size.

    ``hit(key, now)`` counts one request and returns the rate including it. Entries idle
    for two periods are dropped; when ``size`` keys are tracked, the oldest are evicted.
    """

    __slots__ = ("period", "size", "_t")

    def __init__(self, period: float, size: int = 100_000) -> None:
        self.period = period
        self.size = size
        # key -> [period index, count in this period, count in the previous period]
        self._t: dict[str, list] = {}

    def hit(self, key: str, now: float) -> float:
        idx = int(now // self.period)
        e = self._t.get(key)
        if e is None:
            if len(self._t) >= self.size:
                self._expire(idx)
                if len(self._t) >= self.size:
                    del self._t[next(iter(self._t))]
            e = self._t[key] = [idx, 0, 0]
        elif e[0] != idx:
            e[2] = e[1] if e[0] == idx - 1 else 0
            e[1] = 0
            e[0] = idx
        e[1] += 1
        frac = 1.0 - (now / self.period - idx)
        return e[1] + e[2] * frac

    def _expire(self, idx: int) -> None:
        for k in [k for k, e in self._t.items() if e[0] < idx - 1]:
            del self._t[k]

    def __len__(self) -> int:
        return len(self._t)
