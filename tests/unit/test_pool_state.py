"""The pool state: how health and admin combine, and what subscribers are promised."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.pool.model import (
    Admin,
    AdminCause,
    AdminMode,
    Endpoint,
    Health,
    HealthState,
    Pool,
    Server,
    effective_weight,
)
from herder.pool.state import (
    AdminChanged,
    HealthChanged,
    PoolAdded,
    PoolState,
    ServerAdded,
    ServerRemoved,
    UnknownServer,
)

pytestmark = pytest.mark.unit

UP = Health(HealthState.UP, "ok")
DOWN = Health(HealthState.DOWN, "L4 connection refused")


def srv(name: str, port: int = 80, weight: int = 1, **kw) -> Server:
    return Server(name, Endpoint("198.18.0.1", port), weight=weight, **kw)


def checked_pool(*servers: Server, name: str = "web") -> Pool:
    return Pool(name, servers, checks=({"type": "tcp"},))


# ---------------------------------------------------------------- the two axes

@pytest.mark.parametrize(
    ("health", "flags", "weight", "persistent"),
    [
        (HealthState.UP, {}, 5, True),
        (HealthState.STARTING, {}, 5, True),
        (HealthState.STOPPING, {}, 0, True),
        (HealthState.DOWN, {}, 0, False),
        (HealthState.UP, {AdminCause.API: AdminMode.DRAIN}, 0, True),
        (HealthState.DOWN, {AdminCause.API: AdminMode.DRAIN}, 0, False),
        (HealthState.UP, {AdminCause.CONFIG: AdminMode.MAINT}, 0, False),
        (HealthState.UP, {AdminCause.API: AdminMode.DRAIN, AdminCause.DISCOVERY: AdminMode.MAINT}, 0, False),
        (HealthState.STOPPING, {AdminCause.API: AdminMode.MAINT}, 0, False),
    ],
)
def test_health_and_admin_combine(health, flags, weight, persistent):
    s = srv("a", weight=5)
    admin = Admin()
    for cause, mode in flags.items():
        admin = admin.with_cause(cause, mode)
    h = Health(health)
    assert effective_weight(s, h, admin) == weight
    from herder.pool.model import accepts_persistent

    assert accepts_persistent(h, admin) is persistent


def test_drained_server_that_passes_checks_stays_drained():
    ps = PoolState()
    ps.load([checked_pool(srv("a"), srv("b", 81))])
    ps.set_admin("web", "a", AdminMode.DRAIN)
    ps.set_health("web", "a", UP)
    ps.set_health("web", "b", UP)
    pv = ps.snapshot.pool("web")
    assert pv.server("a").effective_weight == 0
    assert pv.server("a").accepts_persistent
    assert [v.name for v in pv.usable()] == ["b"]


def test_maint_gets_no_traffic_whatever_its_health():
    ps = PoolState()
    ps.load([checked_pool(srv("a", admin=AdminMode.MAINT))])
    for state in HealthState:
        ps.set_health("web", "a", Health(state, "x"))
        v = ps.snapshot.pool("web").server("a")
        assert v.effective_weight == 0
        assert not v.accepts_persistent


def test_api_ready_does_not_undo_config_drain():
    ps = PoolState()
    ps.load([Pool("web", (srv("a", admin=AdminMode.DRAIN),))])
    ps.set_admin("web", "a", AdminMode.MAINT, AdminCause.API)
    assert ps.snapshot.pool("web").server("a").admin.mode is AdminMode.MAINT
    ps.set_admin("web", "a", AdminMode.READY, AdminCause.API)
    v = ps.snapshot.pool("web").server("a")
    assert v.admin.mode is AdminMode.DRAIN
    assert v.admin.causes == (AdminCause.CONFIG,)
    assert v.effective_weight == 0


def test_unchecked_pool_servers_are_up_and_checked_ones_start_down():
    ps = PoolState()
    ps.load([Pool("plain", (srv("a"),)), checked_pool(srv("b"), name="checked")])
    assert ps.snapshot.pool("plain").server("a").health.state is HealthState.UP
    assert ps.snapshot.pool("checked").server("b").health.state is HealthState.DOWN
    up_first = Pool("up", (srv("c"),), checks=({"type": "tcp"},), settings={"initial_state": HealthState.UP})
    ps.load([up_first])
    assert ps.snapshot.pool("up").server("c").health.state is HealthState.UP


def test_weight_override_and_restore():
    ps = PoolState()
    ps.load([Pool("web", (srv("a", weight=3),))])
    ps.set_weight("web", "a", 7)
    assert ps.snapshot.pool("web").server("a").effective_weight == 7
    ps.set_weight("web", "a", None)
    assert ps.snapshot.pool("web").server("a").effective_weight == 3
    with pytest.raises(UnknownServer):
        ps.set_weight("web", "nope", 1)
    with pytest.raises(ValueError):
        ps.set_weight("web", "a", 70000)


def test_reload_keeps_health_of_servers_that_stay_and_forgets_removed_ones():
    ps = PoolState()
    ps.load([checked_pool(srv("a"), srv("b", 81))])
    ps.set_health("web", "a", UP)
    ps.set_health("web", "b", UP)
    ps.load([checked_pool(srv("a"), srv("c", 82))])
    snap = ps.snapshot
    pv = snap.pool("web")
    assert pv.server("a").health == UP
    assert pv.server("b") is None
    assert pv.server("c").health.state is HealthState.DOWN
    assert ServerRemoved("web", "b") in snap.changes and ServerAdded("web", "c") in snap.changes
    # b comes back: it starts from the initial state again, not from its old health
    ps.load([checked_pool(srv("a"), srv("b", 81))])
    assert ps.snapshot.pool("web").server("b").health.state is HealthState.DOWN


def test_late_health_result_for_removed_server_is_ignored():
    ps = PoolState()
    ps.load([checked_pool(srv("a"))])
    v = ps.version
    assert ps.set_health("web", "gone", UP) is False
    assert ps.version == v


def test_discovery_sources_merge_and_first_source_wins_on_name_clash():
    ps = PoolState()
    ps.load([Pool("web", (srv("a"),))])
    ps.set_servers("web", "file", [srv("b", 81), srv("a", 99)])
    pv = ps.snapshot.pool("web")
    assert [(v.name, v.source, v.server.address.port) for v in pv.servers] == [("a", "config", 80), ("b", "file", 81)]
    ps.set_servers("web", "file", [srv("b", 81, admin=AdminMode.DRAIN)])
    v = ps.snapshot.pool("web").server("b")
    assert v.admin.causes == (AdminCause.DISCOVERY,)
    ps.set_servers("web", "file", [])
    assert ps.snapshot.pool("web").server("b") is None


def test_snapshots_are_immutable_and_old_ones_unchanged():
    ps = PoolState()
    ps.load([checked_pool(srv("a"))])
    before = ps.snapshot
    ps.set_health("web", "a", UP)
    assert before.pool("web").server("a").health.state is HealthState.DOWN
    with pytest.raises(TypeError):
        before.pools["x"] = None  # type: ignore[index]
    with pytest.raises(AttributeError):
        before.version = 9  # type: ignore[misc]


# ---------------------------------------------------------------- subscribers

def test_subscribers_see_every_version_in_order_once():
    ps = PoolState()
    seen_a: list[int] = []
    seen_b: list[int] = []
    ps.subscribe(lambda s: seen_a.append(s.version))
    ps.load([checked_pool(srv("a"), srv("b", 81))])
    ps.subscribe(lambda s: seen_b.append(s.version))
    for i in range(5):
        ps.set_health("web", "a", UP if i % 2 == 0 else DOWN)
    assert seen_a == list(range(0, ps.version + 1))
    assert seen_b == list(range(1, ps.version + 1))


def test_subscriber_that_raises_does_not_stop_the_others(caplog):
    ps = PoolState()
    seen: list[int] = []

    def bad(s):
        raise RuntimeError("boom")

    ps.subscribe(bad, name="bad")
    ps.subscribe(lambda s: seen.append(s.version))
    ps.load([checked_pool(srv("a"))])
    ps.set_health("web", "a", UP)
    assert seen == [0, 1, 2]
    assert "subscriber bad failed" in caplog.text


def test_subscriber_mutating_from_its_callback_keeps_order_for_everyone():
    ps = PoolState()
    first: list[int] = []
    second: list[int] = []

    def reacting(s):
        first.append(s.version)
        # e.g. a health engine that marks new servers up at once (alpha off)
        for c in s.changes:
            if isinstance(c, ServerAdded):
                ps.set_health(c.pool, c.server, UP)

    ps.subscribe(reacting)
    ps.subscribe(lambda s: second.append(s.version))
    ps.load([checked_pool(srv("a"), srv("b", 81))])
    assert first == second == list(range(0, ps.version + 1))
    assert all(v.health == UP for v in ps.snapshot.pool("web").servers)


def test_batch_makes_one_version_and_changes_list_what_happened():
    ps = PoolState()
    ps.load([checked_pool(srv("a"), srv("b", 81))])
    v0 = ps.version
    with ps.batch():
        ps.set_health("web", "a", UP)
        ps.set_admin("web", "b", AdminMode.DRAIN)
    snap = ps.snapshot
    assert snap.version == v0 + 1
    kinds = {type(c) for c in snap.changes}
    assert kinds == {HealthChanged, AdminChanged}


def test_first_load_reports_pool_and_servers_added():
    ps = PoolState()
    ps.load([checked_pool(srv("a"))])
    assert PoolAdded("web") in ps.snapshot.changes
    assert ServerAdded("web", "a") in ps.snapshot.changes


def test_no_op_mutations_do_not_make_versions():
    ps = PoolState()
    ps.load([checked_pool(srv("a"))])
    v = ps.version
    ps.set_health("web", "a", ps.snapshot.pool("web").server("a").health)
    ps.set_admin("web", "a", AdminMode.READY)
    ps.load([checked_pool(srv("a"))])
    assert ps.version == v


ops = st.lists(
    st.tuples(
        st.sampled_from(["health", "admin", "weight", "discover"]),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 3),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_any_sequence_of_mutations_is_delivered_in_order_and_weights_are_derived(seq):
    ps = PoolState()
    seen: list[int] = []
    ps.subscribe(lambda s: seen.append(s.version))
    ps.load([checked_pool(srv("a"), srv("b", 81))])
    for op, name, n in seq:
        present = ps.snapshot.pool("web").server(name) is not None
        if op == "health" and present:
            ps.set_health("web", name, Health(list(HealthState)[n], "h"))
        elif op == "admin" and present:
            ps.set_admin("web", name, AdminMode(n % 3), list(AdminCause)[n % 3])
        elif op == "weight" and present:
            ps.set_weight("web", name, n)
        elif op == "discover":
            ps.set_servers("web", "dns", [srv("c", 90, weight=n)] if n else [])
    assert seen == list(range(ps.version + 1))
    for v in ps.snapshot.pool("web").servers:
        expected = v.weight if (v.admin.mode is AdminMode.READY and v.health.serving) else 0
        assert v.effective_weight == expected
