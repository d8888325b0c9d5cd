"""Helpers shared by the balance tests: pools as ServerViews or (name, weight) pairs."""

from __future__ import annotations

import pytest

from herder.balance import algorithms
from herder.pool.model import Admin, AdminCause, AdminMode, Endpoint, Health, HealthState, Server
from herder.pool.state import ServerView

ALL = [a.name for a in algorithms()]
KEYED = [a.name for a in algorithms() if a.keyed]
#: Algorithms whose picks do not depend on a key or counters: plain rotations.
ROTATIONS = ["roundrobin", "static-rr"]
#: Algorithms that may return None on a non-empty pool when every server is full.
LIMITED = ["fo", "ovf", "first"]


def view(name: str, weight: int = 1, *, backup: bool = False, state: HealthState = HealthState.UP,
         admin: AdminMode = AdminMode.READY, **meta: object) -> ServerView:
    """A ServerView as the pool state would publish it."""
    server = Server(name=name, address=Endpoint("192.0.2.1", 80), weight=weight, backup=backup, meta=meta)
    adm = Admin().with_cause(AdminCause.API, admin)
    return ServerView(server=server, health=Health(state), admin=adm, weight=weight)


def pool(n: int, weight: int = 1) -> list[tuple[str, int]]:
    return [(f"s{i:03d}", weight) for i in range(n)]


@pytest.fixture(params=ALL)
def algorithm(request) -> str:
    return request.param
