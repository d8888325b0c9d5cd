"""track_service: herder's own pools, read from the pool state (pure: no loop needed)."""

from __future__ import annotations

import pytest

from herder.config.load import load_strings
from herder.ha.vrrp.track import ServiceTracker
from herder.pool.model import Health, HealthState

pytestmark = pytest.mark.unit

CONF = """
[pools.web]
[[pools.web.servers]]
name = "a"
address = "127.0.0.1:18001"
[[pools.web.servers]]
name = "b"
address = "127.0.0.1:18002"
[[pools.web.checks]]
type = "tcp"

[services.www]
pool = "web"
listen = "127.0.0.1:18000"
"""


def test_service_is_ok_while_enough_servers_are_usable():
    from herder.pool.state import PoolState

    cfg = load_strings([("herder.toml", CONF)])
    ps = PoolState()
    ps.load(cfg.pools.values(), cfg.services.values(), cfg.regions.values())
    changes = []
    t = ServiceTracker(ps, {"service www": ("web", 2)}, lambda: changes.append(dict(t.results)))
    t.start()
    assert not t.results["service www"].ok  # checked servers start DOWN
    assert t.results["service www"].reason == "0 usable server(s) in pool web, 2 needed"
    ps.set_health("web", "a", Health(HealthState.UP, "L4 ok", 1.0))
    assert not t.results["service www"].ok
    ps.set_health("web", "b", Health(HealthState.UP, "L4 ok", 1.0))
    assert t.results["service www"].ok
    ps.set_health("web", "b", Health(HealthState.DOWN, "L4 timeout", 2.0))
    assert [c["service www"].ok for c in changes] == [False, True, False]
    t.stop()
