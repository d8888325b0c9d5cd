"""The proxy's link to the balance library: a picker per pool snapshot."""

from __future__ import annotations

from herder.pool.state import PoolView, ServerView


class _SmoothRR:
    """Smooth weighted round robin (nginx), used until the balance registry is wired in."""

    def __init__(self, servers: tuple[ServerView, ...]) -> None:
        self.servers = servers
        self.weights = [s.effective_weight for s in servers]
        self.current = [0] * len(servers)
        self.total = sum(self.weights)

    def pick(self, key: int | None, attempt: int) -> ServerView | None:
        if not self.servers:
            return None
        best = 0
        cur = self.current
        for i, w in enumerate(self.weights):
            cur[i] += w
            if cur[i] > cur[best]:
                best = i
        cur[best] -= self.total
        return self.servers[best]


def build_picker(view: PoolView) -> _SmoothRR:
    usable = view.usable() or view.usable(backup=True)
    return _SmoothRR(usable)
