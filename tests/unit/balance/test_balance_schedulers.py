"""The non-hashing schedulers, table-driven against their reference definitions:
nginx smooth WRR, LVS rr/lc/wlc/sed/nq/fo/ovf/lblc/lblcr, HAProxy static-rr/leastconn/first,
p2c, peak-EWMA (Finagle), and the bounded-load wrapper (HAProxy hash-balance-factor)."""

from __future__ import annotations

import pytest
from conftest import view

from herder.balance import resolve

pytestmark = pytest.mark.unit


def seq(picker, n, **kw):
    return [picker.pick(**kw).name for _ in range(n)]


# ------------------------------------------------------------------ round robin


def test_smooth_weighted_round_robin_is_nginx_sequence():
    # nginx's commit message (2012): weights { a:5, b:1, c:1 } give { a, a, b, a, c, a, a }.
    p = resolve("roundrobin").build([("a", 5), ("b", 1), ("c", 1)])
    assert seq(p, 7) == ["a", "a", "b", "a", "c", "a", "a"]
    assert seq(p, 7) == ["a", "a", "b", "a", "c", "a", "a"]


def nginx_smooth_wrr(weights, n):
    """ngx_http_upstream_get_peer, transcribed."""
    current = [0] * len(weights)
    out = []
    for _ in range(n):
        best = None
        for i, w in enumerate(weights):
            current[i] += w
            if best is None or current[i] > current[best]:
                best = i
        current[best] -= sum(weights)
        out.append(best)
    return out


@pytest.mark.parametrize("n", [3, 32, 33, 100])
def test_smooth_wrr_equals_nginx_on_both_paths(n):
    """Up to 32 servers a Python loop runs, above it numpy: both are nginx's algorithm."""
    weights = [1 + (i * 5) % 7 for i in range(n)]
    p = resolve("roundrobin").build([(f"s{i:03d}", w) for i, w in enumerate(weights)])
    assert [p.index[p.pick().name] for _ in range(3 * sum(weights))] == nginx_smooth_wrr(weights, 3 * sum(weights))


def test_rr_ignores_weights_and_wrr_follows_them():
    servers = [("a", 3), ("b", 1)]
    assert seq(resolve("rr").build(servers), 4) == ["a", "b", "a", "b"]
    assert sorted(seq(resolve("wrr").build(servers), 4)) == ["a", "a", "a", "b"]


def test_round_robin_continues_across_rebuilds():
    policy = resolve("roundrobin")
    p = policy.build([("a", 1), ("b", 1), ("c", 1)])
    assert seq(p, 2) == ["a", "b"]
    p = policy.build([("a", 1), ("b", 1), ("c", 1), ("d", 1)], previous=p)
    assert seq(p, 3) == ["c", "d", "a"]


def test_round_robin_avoid_skips_like_nginx_tried_peers():
    p = resolve("roundrobin").build([("a", 5), ("b", 1), ("c", 1)])
    assert p.pick(avoid="a").name in ("b", "c")
    s = resolve("static-rr").build([("a", 5), ("b", 1)])
    assert all(s.pick(avoid="a").name == "b" for _ in range(10))


def test_static_rr_map_is_interleaved():
    p = resolve("static-rr").build([("a", 2), ("b", 1), ("c", 1)])
    assert [p.names[i] for i in p.map] == ["a", "b", "c", "a"]
    assert seq(p, 8) == ["a", "b", "c", "a"] * 2
    assert len(resolve("static-rr").build([("a", 200), ("b", 100)]).map) == 3  # gcd


# ------------------------------------------------------------------ least connections


@pytest.mark.parametrize("name,conns,expected", [
    # servers: x (weight 1), y (weight 3)
    ("lc", {"x": 1, "y": 2}, "x"),           # fewest connections, weights ignored
    ("leastconn", {"x": 1, "y": 2}, "y"),    # 2/3 < 1/1
    ("wlc", {"x": 1, "y": 3}, "x"),          # 1/1 == 3/3: tie, first in rotation
    ("sed", {"x": 0, "y": 1}, "y"),          # (0+1)/1 = 1 > (1+1)/3
    ("leastconn", {"x": 0, "y": 1}, "x"),    # 0 < 1/3
    ("nq", {"x": 0, "y": 1}, "x"),           # idle first, whatever the weights
    ("nq", {"x": 1, "y": 1}, "y"),           # none idle: sed, 2/1 > 2/3
])
def test_lvs_connection_scores(name, conns, expected):
    p = resolve(name).build([("x", 1), ("y", 3)])
    for server, n in conns.items():
        for _ in range(n):
            p.on_connect(server)
    assert p.pick().name == expected


def test_least_connection_ties_rotate():
    p = resolve("leastconn").build([("a", 1), ("b", 1), ("c", 1)])
    assert seq(p, 6) == ["a", "b", "c", "a", "b", "c"]
    got = []
    for _ in range(6):
        t = p.pick()
        p.on_connect(t.name)
        got.append(t.name)
    assert sorted(got) == ["a", "a", "b", "b", "c", "c"]


def test_least_connection_retry_takes_the_next_best():
    p = resolve("lc").build([("a", 1), ("b", 1), ("c", 1)])
    p.on_connect("b")
    assert p.pick(avoid="a").name == "c"


# ------------------------------------------------------------------ failover family


def test_fo_sends_everything_to_the_heaviest_until_full():
    p = resolve("fo", {"maxconn": 2}).build([("small", 1), ("big", 5), ("mid", 3)])
    assert p.pick().name == "big"
    p.on_connect("big")
    p.on_connect("big")
    assert p.pick().name == "mid"
    for _ in range(2):
        p.on_connect("mid")
    p.on_connect("small")
    p.on_connect("small")
    assert p.pick() is None
    assert resolve("fo").build([("a", 1), ("b", 1)]).pick().name == "a"


def test_ovf_uses_the_weight_as_the_limit():
    p = resolve("ovf").build([("a", 2), ("b", 1)])
    names = []
    for _ in range(4):
        t = p.pick()
        names.append(None if t is None else t.name)
        if t:
            p.on_connect(t.name)
    assert names == ["a", "a", "b", None]


def test_first_fills_servers_in_natural_name_order():
    servers = [view("s10", maxconn=1), view("s2", maxconn=2), view("s1", maxconn=1)]
    p = resolve("first").build(servers)
    got = []
    for _ in range(5):
        t = p.pick()
        got.append(None if t is None else t.name)
        if t:
            p.on_connect(t.name)
    assert got == ["s1", "s2", "s2", "s10", None]
    assert resolve("first").build([("b", 1), ("a", 1)]).pick().name == "a"  # no maxconn


# ------------------------------------------------------------------ locality


def test_lblc_keeps_a_destination_on_its_server_until_overloaded():
    p = resolve("lblc").build([("c1", 1), ("c2", 1), ("c3", 4)])
    assert [p.pick(77).name for _ in range(3)] == ["c1"] * 3  # wlc on an idle pool: the first
    p.on_connect("c1")
    assert p.pick(77).name == "c1"  # at its weight: kept
    p.on_connect("c1")
    assert p.pick(77).name == "c2"  # above its weight while c2 is below half of its own: wlc
    for name in ("c2", "c2", "c3", "c3"):
        p.on_connect(name)
    assert p.pick(77).name == "c2"  # above its weight, but no server is below half of its own
    p.on_release("c3")
    assert p.pick(77).name == "c3"  # now c3 is (1 < 4/2): overloaded, wlc picks c3
    new = resolve("lblc").build([("c1", 1), ("c2", 1), ("c3", 4), ("c4", 1)], previous=p)
    assert new.pick(77).name == "c3"  # the table carries over by name
    assert new.pick(78).name == "c4"  # a new key goes by wlc (c4 is idle)


def test_lblcr_grows_the_set_under_load_and_shrinks_it_when_quiet():
    p = resolve("lblcr", {"shrink_after": 5}).build([("a", 1), ("b", 1), ("c", 1)])
    first = p.pick(9).name
    for _ in range(2):
        p.on_connect(first)
    second = p.pick(9).name
    assert second != first
    assert len(p.table[9][0]) == 2
    for _ in range(2):
        p.on_release(first)
    for _ in range(7):
        p.pick(9)
    assert len(p.table[9][0]) == 1


# ------------------------------------------------------------------ p2c, peak EWMA


def test_p2c_takes_the_less_loaded_of_two_distinct_draws():
    p = resolve("p2c", {"seed": 1}).build([("a", 1), ("b", 1)])
    for _ in range(10):
        p.on_connect("a")
    assert all(p.pick(k).name == "b" for k in range(50))
    assert resolve("random(3)").options["choices"] == 3


def test_peak_ewma_follows_finagle_update_rule():
    p = resolve("peak_ewma", {"decay_s": 10.0, "seed": 1}).build([("fast", 1), ("slow", 1)])
    p.on_latency("slow", 0.5, now_s=100.0)
    p.on_latency("fast", 0.01, now_s=100.0)
    assert p.cost[p.index["slow"]] == 0.5
    p.on_latency("slow", 0.1, now_s=110.0)  # decays: w = e^-1
    import math
    w = math.exp(-1)
    assert p.cost[p.index["slow"]] == pytest.approx(0.5 * w + 0.1 * (1 - w))
    p.on_latency("slow", 2.0, now_s=111.0)  # a peak is taken at once
    assert p.cost[p.index["slow"]] == 2.0
    assert all(p.pick(k).name == "fast" for k in range(30))
    p2 = resolve("peak_ewma").build([("fast", 1), ("slow", 1), ("new", 1)], previous=p)
    assert p2.cost[p2.index["slow"]] == 2.0 and p2.cost[p2.index["new"]] == 0.03


# ------------------------------------------------------------------ bounded loads


@pytest.mark.parametrize("algo", ["ring", "maglev", "rendezvous", "hash"])
def test_bounded_load_caps_every_server_at_factor_times_fair(algo):
    p = resolve(algo, {"hash_balance_factor": 125}).build([(f"s{i}", 1) for i in range(8)])
    for k in range(800):  # a hot key and connections that never end
        t = p.pick(k % 3)
        p.on_connect(t.name)
    loads = [p.connections(n) for n in p.names]
    assert max(loads) <= -(-125 * 800 // (100 * 8))
    assert p.inner.algorithm == algo


def test_bounded_load_keeps_the_hashed_server_while_it_has_room():
    plain = resolve("ring").build([(f"s{i}", 1) for i in range(8)])
    bounded = resolve("ring", {"hash_balance_factor": 150}).build([(f"s{i}", 1) for i in range(8)])
    assert [bounded.pick(k).name for k in range(100)] == [plain.pick(k).name for k in range(100)]
    with pytest.raises(ValueError, match="at least 100"):
        resolve("ring", {"hash_balance_factor": 50})
    with pytest.raises(ValueError, match="unknown option"):
        resolve("roundrobin", {"hash_balance_factor": 150})
