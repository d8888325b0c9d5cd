"""``roundrobin``: smooth weighted round robin, as nginx does it.

Theory of operation
-------------------
nginx's algorithm (``ngx_http_upstream_get_peer``, 2012): every pick adds each server's
weight to its *current weight*, takes the server with the largest current weight (the
first one on ties) and subtracts the total weight from it. Over any window of
``sum(weights)`` picks each server gets exactly its weight's worth, and the picks are
interleaved: weights 5, 1, 1 give ``a a b a c a a``, not ``a a a a a b c`` as LVS's
``wrr`` does.

With equal weights the sequence is plain rotation, and that is what runs (a cursor).
``rr`` (ipvsadm) is this algorithm with ``weighted = false``: weights are ignored except
that 0 still means "never".

A retry with ``avoid`` leaves the avoided server out of that pick entirely (it gains no
current weight and is not in the total), as nginx skips the peers a request already
tried. Current weights and the cursor carry over to the next picker by name, so a pool
change does not restart the sequence from the first server.

Mutable state, owned by the picker: the current weights (or cursor). Per pick: O(1)
with equal weights, O(N) otherwise (numpy above 32 servers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from herder.balance.base import Algorithm, Option, Picker, Target, register, register_alias

__all__ = ["RoundRobinPicker"]

_NUMPY_ABOVE = 32


class RoundRobinPicker(Picker):
    """Smooth weighted round robin (nginx)."""

    counts_load = False

    algorithm = "roundrobin"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        n = len(self.targets)
        weighted = bool(self.options.get("weighted", True))
        w = list(self.weights) if weighted else [1] * n
        self._w = w
        self._total = sum(w)
        self._equal = len(set(w)) == 1
        self._cursor = 0
        cur = [0] * n
        if isinstance(previous, RoundRobinPicker) and len(previous):
            if self._equal and previous._equal:
                # Continue after the server the previous picker would have given next.
                nxt = previous.names[previous._cursor % len(previous)]
                self._cursor = next((i for i, name in enumerate(self.names) if name >= nxt), 0)
            else:
                for i, name in enumerate(self.names):
                    j = previous.index.get(name)
                    if j is not None:
                        cur[i] = int(previous._current()[j])
        self._cur_list = cur
        self._cur_np = np.array(cur, dtype=np.int64) if n > _NUMPY_ABOVE else None
        self._w_np = np.array(w, dtype=np.int64) if n > _NUMPY_ABOVE else None

    def _current(self) -> list[int]:
        if self._cur_np is not None:
            return self._cur_np.tolist()
        return self._cur_list

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        n = len(self.targets)
        exclude = self.index.get(avoid, -1) if (avoid is not None and n > 1) else -1
        if self._equal:
            i = self._cursor % n
            if i == exclude:
                i = (i + 1) % n
            self._cursor = i + 1
            return self.targets[i]
        if self._cur_np is not None:
            cur, w = self._cur_np, self._w_np
            assert w is not None
            if exclude < 0:
                cur += w
                i = int(cur.argmax())
                cur[i] -= self._total
            else:
                w_ex = self._w[exclude]
                cur += w
                cur[exclude] -= w_ex
                saved = cur[exclude]
                cur[exclude] = np.iinfo(np.int64).min
                i = int(cur.argmax())
                cur[exclude] = saved
                cur[i] -= self._total - w_ex
            return self.targets[i]
        cur_l, w_l = self._cur_list, self._w
        best, bv, total = -1, 0, 0
        for j in range(n):
            if j == exclude:
                continue
            c = cur_l[j] + w_l[j]
            cur_l[j] = c
            total += w_l[j]
            if best < 0 or c > bv:
                best, bv = j, c
        cur_l[best] -= total
        return self.targets[best]


register(Algorithm(
    name="roundrobin",
    factory=RoundRobinPicker,
    summary="smooth weighted round robin (nginx): each server in turn, in proportion to its weight, interleaved",
    origin="nginx default, HAProxy roundrobin, LVS wrr/rr",
    options=(Option("weighted", bool, True, "follow the weights; off: plain rotation (ipvsadm rr)"),),
))
register_alias("rr", "roundrobin", "ipvsadm", note="weights ignored (0 still excluded)", weighted=False)
register_alias("wrr", "roundrobin", "ipvsadm", note="interleaved smoothly, where LVS sends bursts")
register_alias("round-robin", "roundrobin", "herder")
