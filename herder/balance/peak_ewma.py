"""``peak_ewma``: power of two choices on latency (Finagle's and Linkerd's peak EWMA).

Each server has a cost: a moving average of its response latency that jumps up at once
to any slower response (the *peak*) and decays back exponentially, with time constant
``decay_s``, as faster responses arrive. A pick draws two servers (weighted) and keeps
the one with the lower ``cost * (in_flight + 1) / weight``. Slow or overloaded servers
get fewer requests within one round trip of becoming slow.

Update rule (Finagle ``PeakEwma``): for a response of latency ``rtt`` at time ``now``,
``w = exp(-(now - last) / decay_s)``; ``cost = rtt`` if ``rtt > cost``, else
``cost = cost * w + rtt * (1 - w)``. A server with no sample yet costs ``default_rtt_s``
(Linkerd's ``default_rtt``).

The caller reports with :meth:`Picker.on_connect` / :meth:`Picker.on_release` (in-flight
requests) and :meth:`Picker.on_latency` with a monotonic ``now``: the picker reads no
clock. Costs carry over to the next picker by server name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from herder.balance.base import Algorithm, Option, Picker, Target, register, register_alias
from herder.balance.p2c import PowerOfChoicesPicker

__all__ = ["PeakEwmaPicker"]


class PeakEwmaPicker(PowerOfChoicesPicker):
    """p2c with ``peak-EWMA latency * (in flight + 1) / weight`` as the load."""

    algorithm = "peak_ewma"

    def __init__(self, targets: Sequence[Target], options: Mapping[str, object] | None = None,
                 previous: Picker | None = None) -> None:
        super().__init__(targets, options, previous)
        self._decay = float(self.options.get("decay_s", 10.0))  # type: ignore[arg-type]
        default = float(self.options.get("default_rtt_s", 0.03))  # type: ignore[arg-type]
        n = len(self.targets)
        self.cost: list[float] = [default] * n
        self._stamp: list[float | None] = [None] * n
        if isinstance(previous, PeakEwmaPicker):
            for i, name in enumerate(self.names):
                j = previous.index.get(name)
                if j is not None:
                    self.cost[i] = previous.cost[j]
                    self._stamp[i] = previous._stamp[j]

    def load(self, i: int) -> float:
        return self.cost[i] * (self.conns[i] + 1) / self.weights[i]

    def on_latency(self, name: str, latency_s: float, now_s: float) -> None:
        i = self.index.get(name)
        if i is None or latency_s < 0:
            return
        last = self._stamp[i]
        if last is None or latency_s > self.cost[i]:
            self.cost[i] = latency_s
        else:
            w = math.exp(-max(now_s - last, 0.0) / self._decay)
            self.cost[i] = self.cost[i] * w + latency_s * (1.0 - w)
        self._stamp[i] = now_s if last is None else max(now_s, last)


register(Algorithm(
    name="peak_ewma",
    factory=PeakEwmaPicker,
    summary="power of two choices on peak-EWMA latency x in-flight requests (Finagle, Linkerd)",
    origin="Finagle, Linkerd",
    default_key="none",
    counts=True,
    latency=True,
    options=(
        Option("decay_s", float, 10.0, "time constant of the moving average, seconds (Finagle: 10)", minimum=1e-3),
        Option("default_rtt_s", float, 0.03, "cost of a server with no sample yet (Linkerd: 30 ms)", minimum=0),
        Option("choices", int, 2, "how many servers to draw", minimum=1),
        Option("seed", int, None, "seed of the picker's generator (default: from the OS)"),
    ),
))
register_alias("ewma", "peak_ewma", "herder")
