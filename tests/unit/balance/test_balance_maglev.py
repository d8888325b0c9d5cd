"""Maglev (NSDI'16 section 3.4): the fast population equals Pseudocode 1; slots within 1;
the table is plain data; disruption stays below 3% for 1% of 1000 servers removed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.balance import maglev, resolve
from herder.balance.hashing import hash_name
from herder.balance.maglev import DEFAULT_TABLE_SIZE, maglev_permutations, maglev_table, maglev_turns

pytestmark = pytest.mark.unit


def pseudocode_1(names, weights, size):
    """The paper's Pseudocode 1, transcribed, with Envoy's weighted turns in integers."""
    n = len(names)
    if n == 1:
        return np.zeros(size, dtype=np.int32)
    off, skip = (a.tolist() for a in maglev_permutations(names, size))
    top = max(weights)
    nxt, turns, table, filled = [0] * n, [0] * n, [-1] * size, 0
    rnd = 1
    while True:
        for i in range(n):
            if rnd * weights[i] < turns[i] * top:
                continue
            turns[i] += 1
            c = (off[i] + nxt[i] * skip[i]) % size
            while table[c] >= 0:
                nxt[i] += 1
                c = (off[i] + nxt[i] * skip[i]) % size
            table[c] = i
            nxt[i] += 1
            filled += 1
            if filled == size:
                return np.array(table, dtype=np.int32)
        rnd += 1


@settings(max_examples=30, deadline=None)
@given(weights=st.lists(st.integers(1, 20), min_size=1, max_size=150),
       size=st.sampled_from([251, 1021, 4099]))
def test_population_equals_pseudocode_1_small_tables(weights, size):
    names = [f"srv-{i}" for i in range(len(weights))]
    assert (maglev_table(names, weights, size) == pseudocode_1(names, weights, size)).all()


@pytest.mark.parametrize("n,weights", [(1000, None), (150, None), (300, "mixed"), (40, "skewed")])
def test_population_equals_pseudocode_1_at_65537(n, weights):
    names = [f"s{i:04d}" for i in range(n)]
    if weights is None:
        w = [1] * n
    elif weights == "mixed":
        w = [1 + (i * 7) % 9 for i in range(n)]
    else:
        w = [1000] + [1] * (n - 1)
    assert (maglev_table(names, w, DEFAULT_TABLE_SIZE) == pseudocode_1(names, w, DEFAULT_TABLE_SIZE)).all()


# Weights as they come: 0 (one turn, in round 1), small, and very unequal.
WEIGHTS = st.one_of(st.integers(0, 4), st.sampled_from([0, 1, 7, 1000, 10**6]))


def _servers(data, max_n):
    n = data.draw(st.integers(1, max_n), label="n")
    prefix = data.draw(st.text("abcxyz-0", max_size=5), label="prefix")
    weights = data.draw(st.lists(WEIGHTS, min_size=n, max_size=n).filter(lambda w: max(w) > 0), label="weights")
    return [f"{prefix}{i:03d}" for i in range(n)], weights


@settings(max_examples=100, deadline=None)
@given(data=st.data(), size=st.sampled_from([251, 1009, 4099]))
def test_population_equals_pseudocode_1_random_weights(data, size):
    """Any number of servers (even more than slots), any weights (0 included): the fast
    build is Pseudocode 1 bit for bit."""
    names, weights = _servers(data, 300)
    assert (maglev_table(names, weights, size) == pseudocode_1(names, weights, size)).all()


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_population_equals_pseudocode_1_random_weights_at_65537(data):
    names, weights = _servers(data, 300)
    assert (maglev_table(names, weights, DEFAULT_TABLE_SIZE)
            == pseudocode_1(names, weights, DEFAULT_TABLE_SIZE)).all()


# The build's tuning only changes how the work is cut up, never the result: force every
# path (tiny or huge windows, few candidates, the give-up-and-split path, the sparse
# rounds of the fixed-point search, all-walk, all-tail, sorted or masked tail rows).
PATHS = {
    "windows only": {"_WALK": 0, "_TAIL_MAX": 1},
    "tiny windows": {"_WINDOW": 0.01, "_WINDOW_LATE": 0.02, "_WALK": 0, "_TAIL_MAX": 1},
    "huge windows": {"_WINDOW": 0.95, "_WINDOW_LATE": 0.95, "_WALK": 0},
    "no spare candidates": {"_EXTRA": 0.0, "_EXTRA_SQRT": 0.0, "_WALK": 0, "_TAIL_MAX": 1},
    "give up and split": {"_MAX_ROUNDS": 2, "_WALK": 0},
    "sparse rounds at once": {"_FEW": 1, "_WALK": 0},
    "dense rounds only": {"_FEW": 10**9, "_WALK": 0},
    "walk only": {"_WALK": 10**9, "_WALK_MARGIN": 0.1, "_WALK_MORE": 1, "_TAIL_MAX": 1},
    "tail only": {"_TAIL_MAX": 1 << 20, "_TAIL_CELLS": 1 << 30, "_TAIL_SORT": 0},
    "masked tail rows": {"_TAIL_SORT": 10**9},
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("size,n,weights", [(1009, 3, None), (1009, 40, "mixed"), (4099, 120, "skewed"),
                                            (4099, 300, None)])
def test_every_build_path_equals_pseudocode_1(monkeypatch, path, size, n, weights):
    for name, value in PATHS[path].items():
        monkeypatch.setattr(maglev, name, value)
    names = [f"p{i:03d}" for i in range(n)]
    if weights is None:
        w = [1] * n
    elif weights == "mixed":
        w = [(i * 7) % 5 for i in range(n)]
    else:
        w = [1000, 0] + [1 + i % 3 for i in range(n - 2)]
    assert (maglev_table(names, w, size) == pseudocode_1(names, w, size)).all()


@pytest.mark.parametrize("weights", [[1] * 7, [3] * 1000, [1, 2, 3], [0, 5, 0, 1], [10**6, 1, 1]])
def test_fast_turn_order_is_maglev_turns(weights):
    for size in (251, 65537):
        assert (maglev._Turns(weights, size).order(0) == maglev_turns(weights, size)[1]).all()


def test_permutations_are_the_documented_hashes():
    names = ["a", "s0001", "backend-7", "ü-ñ", "\udcff", "x" * 300]
    for size in (251, DEFAULT_TABLE_SIZE):
        off, skip = maglev_permutations(names, size)
        assert off.tolist() == [hash_name(n, "maglev-offset") % size for n in names]
        assert skip.tolist() == [hash_name(n, "maglev-skip") % (size - 1) + 1 for n in names]


@settings(max_examples=6, deadline=None)
@given(n=st.integers(2, 1000), prefix=st.text("abcxyz", min_size=1, max_size=4))
def test_equal_weights_give_slot_counts_within_one(n, prefix):
    p = resolve("maglev").build([(f"{prefix}{i}", 1) for i in range(n)])
    counts = np.bincount(p.table_array, minlength=n)
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == DEFAULT_TABLE_SIZE


def test_the_table_is_plain_data():
    p = resolve("maglev", {"table_size": 251}).build([("b", 1), ("a", 1), ("c", 2)])
    assert isinstance(p.table, tuple) and len(p.table) == 251
    assert all(isinstance(i, int) and 0 <= i < 3 for i in p.table)
    assert p.names == ("a", "b", "c")
    assert sum(p.slot_counts().values()) == 251
    assert abs(p.slot_counts()["c"] - 2 * p.slot_counts()["a"]) <= 2
    with pytest.raises(ValueError):
        p.table_array[0] = 1  # read-only


def test_changed_slots_is_the_delta_by_name():
    policy = resolve("maglev", {"table_size": 1021})
    old = policy.build([(f"s{i}", 1) for i in range(10)])
    new = policy.build([(f"s{i}", 1) for i in range(10) if i != 4])
    delta = new.changed_slots(old)
    assert 0 < len(delta) < 1021
    old_names = [old.names[i] for i in old.table]
    new_names = [new.names[i] for i in new.table]
    assert delta == [(s, new_names[s]) for s in range(1021) if old_names[s] != new_names[s]]
    assert all(old_names[s] == "s4" or name != old_names[s] for s, name in delta)
    assert len(new.changed_slots(None)) == 1021


def test_removing_one_percent_of_1000_servers_moves_few_other_keys():
    """The issue's bound (the paper's Figure 12): < 3% of the other keys move."""
    policy = resolve("maglev")
    servers = [(f"s{i:04d}", 1) for i in range(1000)]
    before = policy.build(servers)
    gone = {f"s{i:04d}" for i in range(0, 1000, 100)}
    after = policy.build([s for s in servers if s[0] not in gone])
    old = np.array(before.names, dtype=object)[before.table_array]
    new = np.array(after.names, dtype=object)[after.table_array]
    kept = ~np.isin(old, list(gone))
    assert (old[kept] != new[kept]).mean() < 0.03
    added = policy.build(servers + [("s1000", 1)])
    new = np.array(added.names, dtype=object)[added.table_array]
    moved = (old != new).mean()
    assert 1 / 1001 <= moved < 3 / 1001 + 0.01


def test_table_size_must_be_a_prime():
    with pytest.raises(ValueError, match="prime"):
        resolve("maglev", {"table_size": 65536})
    assert resolve("mh", {"table_size": "251"}).options["table_size"] == 251


def test_more_servers_than_slots_still_fills_the_table():
    p = resolve("maglev", {"table_size": 7}).build([(f"s{i}", 1) for i in range(20)])
    assert len(set(p.table)) == 7 and min(p.table) >= 0


def test_1000_equal_servers_at_65537_differ_by_at_most_one_slot():
    p = resolve("maglev").build([(f"backend-{i}", 1) for i in range(1000)])
    counts = np.bincount(p.table_array, minlength=1000)
    assert (counts.min(), counts.max()) == (65, 66)
