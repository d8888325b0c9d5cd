"""``lc``: fewest open connections, weights ignored (LVS least-connection).

LVS's ``lc`` picks the server with the lowest connection overhead, whatever its weight
(weight 0 still means "never"). The machinery (counters, rotating ties) is
:class:`herder.balance.leastconn.LeastConnPicker`; only the score differs.
"""

from __future__ import annotations

from herder.balance.base import Algorithm, register
from herder.balance.leastconn import LeastConnPicker

__all__ = ["LeastConnectionPicker"]


class LeastConnectionPicker(LeastConnPicker):
    """Lowest connection count wins; weights ignored."""

    algorithm = "lc"

    @staticmethod
    def score(conns: int, weight: int) -> float:
        return float(conns)


register(Algorithm(
    name="lc",
    factory=LeastConnectionPicker,
    summary="fewest open connections, weights ignored",
    origin="LVS lc",
    counts=True,
))
