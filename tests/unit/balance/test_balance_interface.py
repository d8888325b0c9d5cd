"""One behaviour suite for every algorithm: the contract of base.Picker and Policy.build.

Edge cases (empty pool, one server, all down, all weights 0, weights 1000x apart), order
independence, weight 0, retries, tiers and backups, counters carried over.
"""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import ALL, KEYED, LIMITED, pool, view
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.balance import EmptyPicker, HashPicker, Target, algorithms, resolve
from herder.balance.base import BACKUP_TIER, targets_from, usable_targets
from herder.pool.model import AdminMode, HealthState

pytestmark = pytest.mark.unit

FAST = settings(max_examples=25, deadline=None)


def picks(picker, keys, connect: bool = False) -> list[str | None]:
    out = []
    for k in keys:
        t = picker.pick(k)
        out.append(None if t is None else t.name)
        if connect and t is not None:
            picker.on_connect(t.name)
    return out


def build(name: str, servers, **options):
    if name in ("random", "p2c", "peak_ewma"):
        options.setdefault("seed", 7)
    return resolve(name, options).build(servers)


# ------------------------------------------------------------------ edge cases


def test_empty_pool_picks_none(algorithm):
    p = build(algorithm, [])
    assert isinstance(p, EmptyPicker)
    assert p.pick(1) is None and p.pick(None) is None and p.pick(1, attempt=3, avoid="x") is None
    assert len(p) == 0


def test_all_weights_zero_picks_none(algorithm):
    p = build(algorithm, [("a", 0), ("b", 0)])
    assert p.pick(1) is None


def test_all_servers_down_or_in_maintenance_picks_none(algorithm):
    servers = [view("a", state=HealthState.DOWN), view("b", admin=AdminMode.MAINT),
               view("c", admin=AdminMode.DRAIN), view("d", state=HealthState.STOPPING)]
    assert build(algorithm, servers).pick(42) is None


def test_one_server_gets_everything_even_on_retry(algorithm):
    p = build(algorithm, [("only", 3)])
    for k in range(50):
        assert p.pick(k).name == "only"
        assert p.pick(k, attempt=2, avoid="only").name == "only"
    assert p.pick(None).name == "only"


def test_servers_with_weight_zero_are_never_picked(algorithm):
    p = build(algorithm, [("a", 0), ("b", 2), ("c", 0), ("d", 1)])
    got = set(picks(p, range(300), connect=algorithm not in LIMITED))
    assert got <= {"b", "d"} and got


def test_weights_1000x_apart(algorithm):
    """The heavy server dominates where weights count; the light one is still usable."""
    p = build(algorithm, [("heavy", 1000), ("light", 1)])
    got = Counter(picks(p, range(5000)))
    assert set(got) <= {"heavy", "light"}
    if algorithm in ("roundrobin", "static-rr", "hash", "maglev", "rendezvous", "random", "ring"):
        assert got["heavy"] >= 4950
    assert p.pick(0, attempt=1, avoid="heavy").name == "light"


def test_down_servers_are_left_out_of_a_view_pool(algorithm):
    servers = [view("a"), view("b", state=HealthState.DOWN), view("c"), view("d", admin=AdminMode.DRAIN)]
    p = build(algorithm, servers)
    assert p.names == ("a", "c")
    assert set(picks(p, range(100))) <= {"a", "c"}


# ------------------------------------------------------------------ tiers and backups


def test_backups_only_when_no_active_server_is_usable(algorithm):
    active = [view("a"), view("b")]
    backups = [view("x", backup=True), view("y", backup=True)]
    p = build(algorithm, active + backups)
    assert set(picks(p, range(50))) <= {"a", "b"}
    p = build(algorithm, [view("a", state=HealthState.DOWN), view("b", weight=0)] + backups)
    assert p.tier == BACKUP_TIER
    assert set(picks(p, range(50))) <= {"x", "y"}
    p = build(algorithm, [view("a", state=HealthState.DOWN)] + backups, allbackups=False)
    assert set(picks(p, range(50))) == {"x"}


def test_priority_tiers_fall_through_in_order():
    servers = [view("p0", priority=0, state=HealthState.DOWN), view("p1a", priority=1),
               view("p1b", priority=1), view("p2", priority=2), view("bk", backup=True)]
    targets = usable_targets(targets_from(servers))
    assert [t.name for t in targets] == ["p1a", "p1b"]
    p = resolve("roundrobin").build(servers)
    assert {p.pick().name for _ in range(4)} == {"p1a", "p1b"}


# ------------------------------------------------------------------ determinism and order


@FAST
@given(weights=st.lists(st.integers(0, 9), min_size=1, max_size=12), data=st.data())
def test_the_listing_order_does_not_matter(weights, data):
    servers = [(f"n{i}", w) for i, w in enumerate(weights)]
    shuffled = data.draw(st.permutations(servers))
    for name in ALL:
        a = build(name, servers)
        b = build(name, shuffled)
        assert a.names == b.names
        keys = range(0, 10_000, 97)
        assert picks(a, keys, connect=True) == picks(b, keys, connect=True), name


@FAST
@given(n=st.integers(2, 40), key=st.integers(0, 2**64 - 1))
def test_keyed_attempts_visit_distinct_servers(n, key):
    for name in KEYED:
        p = build(name, pool(n))
        seen = [p.pick(key, attempt=a).name for a in range(n)]
        assert len(set(seen)) == n, name
        assert p.pick(key, attempt=n).name == seen[0]


@FAST
@given(n=st.integers(2, 30), key=st.integers(0, 2**64 - 1), data=st.data())
def test_a_retry_avoids_the_failed_server(n, key, data):
    for name in ALL:
        p = build(name, pool(n))
        first = p.pick(key)
        if first is None:
            continue
        again = p.pick(key, attempt=1, avoid=first.name)
        assert again is not None and again.name != first.name, name


def test_keyed_pick_is_stable_and_none_key_spreads():
    for name in KEYED:
        p = build(name, pool(20))
        assert {p.pick(12345).name for _ in range(20)} == {p.pick(12345).name}
        assert len({p.pick(None).name for _ in range(400)}) == 20, name


def test_views_and_pairs_give_the_same_picker():
    servers = [view("a", 2), view("b", 1), view("c", 5)]
    for name in ALL:
        a = build(name, servers)
        b = build(name, [("c", 5), ("a", 2), ("b", 1)])
        assert picks(a, range(200), connect=True) == picks(b, range(200), connect=True)
        t = build(name, servers).pick(3)
        assert t is not None and t.view is not None and t.view.name == t.name


def test_bad_targets_are_caller_errors():
    with pytest.raises(ValueError, match="two targets"):
        targets_from([("a", 1), ("a", 2)])
    with pytest.raises(ValueError, match="negative"):
        targets_from([("a", -1)])
    assert targets_from([Target("b", 1), ("a", 1)])[0].name == "a"


# ------------------------------------------------------------------ counters


def test_connection_counts_carry_over_to_the_next_picker():
    policy = resolve("leastconn")
    old = policy.build(pool(3))
    for _ in range(5):
        old.on_connect("s000")
    old.on_connect("s001")
    new = policy.build(pool(3) + [("s003", 1)], previous=old)
    assert new.connections("s000") == 5 and new.connections("s001") == 1 and new.connections("s003") == 0
    new.on_release("s000")
    new.on_release("gone")  # unknown names are ignored
    new.on_release("s003")  # never below zero
    assert new.connections("s000") == 4 and new.connections("s003") == 0
    assert new.pick().name in ("s002", "s003")


def test_counters_survive_an_outage_of_the_whole_pool():
    policy = resolve("leastconn")
    p = policy.build(pool(2))
    p.on_connect("s001")
    down = policy.build([view("s000", state=HealthState.DOWN), view("s001", state=HealthState.DOWN)], previous=p)
    down = policy.build([], previous=down)
    assert isinstance(down, EmptyPicker) and down.pick() is None
    back = policy.build(pool(2), previous=down)
    assert back.connections("s001") == 1


def test_hash_pickers_share_the_lookup_many_contract():
    import numpy as np

    keys = np.arange(0, 5000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for name in KEYED:
        p = build(name, [("a", 1), ("b", 3), ("c", 2)])
        assert isinstance(p, HashPicker)
        many = p.lookup_many(keys)
        assert [p.names[i] for i in many] == picks(p, [int(k) for k in keys]), name


# ------------------------------------------------------------------ counts_load


def test_counts_load_false_means_the_counters_change_no_pick(algorithm):
    """An algorithm that says it never reads the connection counters (so that the L7 proxy
    skips on_connect/on_release) picks exactly the same with and without them."""
    servers = [("a", 3), ("b", 1), ("c", 2), ("d", 1)]
    quiet, busy = build(algorithm, servers), build(algorithm, servers)
    algo = next(a for a in algorithms() if a.name == algorithm)
    if algo.counts:
        assert quiet.counts_load, f"{algorithm} is registered as counting connections"
        return
    keys = list(range(200))
    loaded = []
    for k in keys:
        t = busy.pick(k)
        loaded.append(None if t is None else t.name)
        if t is not None:
            busy.on_connect(t.name)  # connections that never end
            busy.on_connect("a")
    if not quiet.counts_load:
        assert picks(quiet, keys) == loaded, f"{algorithm}: counts_load = False but its picks follow the counters"


def test_leastconn_does_read_the_counters_the_test_above_relies_on():
    quiet, busy = build("leastconn", [("a", 1), ("b", 1)]), build("leastconn", [("a", 1), ("b", 1)])
    for _ in range(5):
        busy.on_connect("a")
    assert busy.counts_load
    assert picks(busy, range(4)) != picks(quiet, range(4))
