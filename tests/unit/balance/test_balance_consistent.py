"""Ring hash and rendezvous: removing a server moves only its keys; adding one moves about
1/(N+1) of them, all to the newcomer; ketama-compatible points."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.balance import resolve
from herder.balance.hashing import ketama_points

pytestmark = pytest.mark.unit

KEYS = np.random.default_rng(5).integers(0, 2**64, size=4000, dtype=np.uint64)
CONSISTENT = ["ring", "rendezvous"]


def owners(picker) -> np.ndarray:
    return np.array(picker.names, dtype=object)[picker.lookup_many(KEYS)]


@settings(max_examples=25, deadline=None)
@given(weights=st.lists(st.integers(1, 8), min_size=2, max_size=40), data=st.data())
def test_removing_a_server_moves_only_its_keys(weights, data):
    servers = [(f"h{i}", w) for i, w in enumerate(weights)]
    gone = data.draw(st.sampled_from(servers))
    for name in CONSISTENT:
        policy = resolve(name)
        before = owners(policy.build(servers))
        after = owners(policy.build([s for s in servers if s != gone]))
        moved = before != after
        assert (before[moved] == gone[0]).all(), name
        assert (after != gone[0]).all()


@settings(max_examples=15, deadline=None)
@given(n=st.integers(5, 60))
def test_adding_a_server_moves_about_one_in_n_plus_one(n):
    servers = [(f"h{i}", 1) for i in range(n)]
    for name in CONSISTENT:
        policy = resolve(name)
        before = owners(policy.build(servers))
        after = owners(policy.build(servers + [("newcomer", 1)]))
        moved = before != after
        assert (after[moved] == "newcomer").all(), name
        # rendezvous: exactly 1/(N+1) in expectation; ring: its arcs, ~8% relative spread
        assert abs(moved.mean() - 1 / (n + 1)) < 3.5 / (n + 1) ** 0.5 / 160**0.5 + 0.02


def test_ketama_points_are_libketama_points():
    """MD5 of "<name>-<k>", four little-endian 32-bit points per digest."""
    d0 = hashlib.md5(b"10.0.1.1:11211-0").digest()
    d1 = hashlib.md5(b"10.0.1.1:11211-1").digest()
    expected = list(struct.unpack("<4I", d0)) + list(struct.unpack("<4I", d1))[:2]
    assert ketama_points("10.0.1.1:11211", 6) == expected
    assert ketama_points("x", 0) == []


def test_ring_has_160_points_per_unit_of_weight_and_caps_the_total():
    p = resolve("ring").build([("a", 1), ("b", 3)])
    assert len(p.points_array) == 640
    assert np.all(np.diff(p.points_array) >= 0)
    assert abs(p.ownership().sum() - 1) < 1e-12
    capped = resolve("ring", {"max_points": 1000}).build([("a", 50), ("b", 50)])
    assert len(capped.points_array) == 1000


def test_ring_retries_walk_clockwise():
    p = resolve("ring").build([(f"s{i}", 1) for i in range(8)])
    for key in range(50):
        h = p.hash_key(key)
        ranking = list(p.ranked(h))
        assert sorted(ranking) == list(range(8))
        assert [p.pick(key, attempt=a).name for a in range(8)] == [p.names[i] for i in ranking]


def test_rendezvous_scalar_and_vector_paths_agree():
    for n in (5, 47, 49, 200):
        for weights in ((1,), (1, 2, 5)):
            servers = [(f"r{i}", weights[i % len(weights)]) for i in range(n)]
            p = resolve("rendezvous").build(servers)
            got = [p.pick(int(k)).name for k in KEYS[:500]]
            assert got == list(owners(p)[:500])
