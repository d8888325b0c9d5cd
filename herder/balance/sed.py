"""``sed``: shortest expected delay (LVS).

The expected delay of a new connection on server i is ``(C_i + 1) / W_i``: the new
connection waits behind the ``C_i`` open ones on a server of capacity ``W_i``. Unlike
``wlc``, an idle heavy server beats an idle light one. The machinery is
:class:`herder.balance.leastconn.LeastConnPicker`; only the score differs.
"""

from __future__ import annotations

from herder.balance.base import Algorithm, register
from herder.balance.leastconn import LeastConnPicker

__all__ = ["ShortestExpectedDelayPicker"]


class ShortestExpectedDelayPicker(LeastConnPicker):
    """Lowest ``(connections + 1) / weight`` wins."""

    algorithm = "sed"

    @staticmethod
    def score(conns: int, weight: int) -> float:
        return (conns + 1) / weight


register(Algorithm(
    name="sed",
    factory=ShortestExpectedDelayPicker,
    summary="shortest expected delay: lowest (connections + 1) / weight",
    origin="LVS sed",
    counts=True,
))
