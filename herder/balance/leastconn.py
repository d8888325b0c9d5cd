"""``leastconn``: fewest open connections per unit of weight (HAProxy, nginx ``least_conn``).

Theory of operation
-------------------
The picker keeps one counter per server, moved by :meth:`Picker.on_connect` and
:meth:`Picker.on_release` (the caller reports; :meth:`pick` itself counts nothing, so a
pick that ends up unused costs nothing). A pick returns the server with the lowest
*score*; this module's score is ``connections / weight``, which is LVS ``wlc`` and
HAProxy ``leastconn``. :mod:`herder.balance.lc`, :mod:`~herder.balance.sed` and
:mod:`~herder.balance.nq` are the same machinery with LVS's other scores.

Ties rotate: the search for the lowest score starts after the server picked last, so a
burst of requests on an idle pool is spread instead of all landing on the first server.
That is HAProxy's behaviour ("round-robin is performed within groups of servers of the
same load"); LVS takes the first server in its list, which a burst would pile onto.

LVS counts ``active * 256 + inactive`` connections; herder has one count per server (the
requests or connections in flight), so its ``lc`` is LVS's with no inactive ones.

Scores are kept up to date on every counter change, so a pick is one ``min()`` and one
``list.index()`` in C: O(N) but fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Picker, Target, register, register_alias

__all__ = ["LeastConnPicker"]


class LeastConnPicker(Picker):
    """Lowest ``score(connections, weight)`` wins; ties rotate. Subclasses change the score."""

    algorithm = "leastconn"

    @staticmethod
    def score(conns: int, weight: int) -> float:
        """HAProxy leastconn / LVS wlc: connections per unit of weight."""
        return conns / weight

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self._scores = [self.score(c, w) for c, w in zip(self.conns, self.weights, strict=True)]
        self._cursor = 0
        if isinstance(previous, LeastConnPicker) and len(previous):
            last = previous.names[(previous._cursor - 1) % len(previous)]
            self._cursor = next((i for i, name in enumerate(self.names) if name > last), 0)

    def _load_changed(self, i: int) -> None:
        self._scores[i] = self.score(self.conns[i], self.weights[i])

    def pick(self, key: int | None = None, attempt: int = 0, avoid: str | None = None) -> Target | None:
        scores = self._scores
        m = min(scores)
        try:
            i = scores.index(m, self._cursor)
        except ValueError:
            i = scores.index(m)
        if avoid is not None and len(scores) > 1 and self.names[i] == avoid:
            i = self._best_except(i)
        self._cursor = i + 1
        return self.targets[i]

    def _best_except(self, skip: int) -> int:
        scores = self._scores
        n = len(scores)
        best = -1
        for k in range(n):
            j = (self._cursor + k) % n
            if j != skip and (best < 0 or scores[j] < scores[best]):
                best = j
        return best


register(Algorithm(
    name="leastconn",
    factory=LeastConnPicker,
    summary="fewest open connections per unit of weight; ties rotate",
    origin="HAProxy leastconn, nginx least_conn, LVS wlc",
    counts=True,
))
register_alias("least_conn", "leastconn", "nginx")
register_alias("wlc", "leastconn", "ipvsadm", note="active connections only; ties rotate")
