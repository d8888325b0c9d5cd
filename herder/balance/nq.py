"""``nq``: never queue (LVS).

An idle server (no open connection) is taken at once, whatever its weight; when none is
idle this is ``sed``: lowest ``(C_i + 1) / W_i``. LVS takes the first idle server in its
list; herder rotates among idle servers like every tie (see
:mod:`herder.balance.leastconn`).
"""

from __future__ import annotations

from herder.balance.base import Algorithm, register
from herder.balance.leastconn import LeastConnPicker

__all__ = ["NeverQueuePicker"]


class NeverQueuePicker(LeastConnPicker):
    """Idle servers first; otherwise shortest expected delay."""

    algorithm = "nq"

    @staticmethod
    def score(conns: int, weight: int) -> float:
        if conns == 0:
            return -1.0
        return (conns + 1) / weight


register(Algorithm(
    name="nq",
    factory=NeverQueuePicker,
    summary="never queue: an idle server if there is one, else shortest expected delay",
    origin="LVS nq",
    counts=True,
))
