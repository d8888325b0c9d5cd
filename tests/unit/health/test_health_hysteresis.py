"""The single-counter rise/fall hysteresis (HAProxy check.c), tested on its own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herder.health.hysteresis import Hysteresis, is_up, step

pytestmark = pytest.mark.unit

rises = st.integers(1, 8)
falls = st.integers(1, 8)


# (description, rise, fall, start, results, expected counters after each result)
CASES = [
    ("up server, 3 failures with fall 3 -> down", 2, 3, 4, "fff", [3, 2, 0]),
    ("down server, 2 successes with rise 2 -> up at the top", 2, 3, 0, "ss", [1, 4]),
    ("a success in transition goes back to the top", 2, 3, 4, "fs", [3, 4]),
    ("a failure while rising falls back to 0", 2, 3, 0, "sf", [1, 0]),
    ("counter stays at 0 on failures", 2, 3, 0, "ff", [0, 0]),
    ("counter stays at the top on successes", 2, 3, 4, "ss", [4, 4]),
    ("fall 1: one failure is enough", 2, 1, 2, "f", [0]),
    ("rise 1: one success is enough", 1, 3, 0, "s", [3]),
    ("started up unverified (at rise): first failure -> down", 2, 3, 2, "f", [0]),
]


@pytest.mark.parametrize("desc,rise,fall,start,results,expected", CASES, ids=[c[0] for c in CASES])
def test_step_table(desc, rise, fall, start, results, expected):
    h = start
    seen = []
    for r in results:
        h = step(h, r == "s", rise, fall)
        seen.append(h)
    assert seen == expected


@given(rises, falls)
def test_fully_up_goes_down_after_exactly_fall_failures(rise, fall):
    h = Hysteresis.start(rise, fall, up=True, verified=True)
    for i in range(fall):
        assert h.up, f"down after only {i} failures"
        h = h.record(False)
    assert not h.up
    assert h.health == 0


@given(rises, falls)
def test_fully_down_comes_up_after_exactly_rise_successes(rise, fall):
    h = Hysteresis.start(rise, fall, up=False)
    for i in range(rise):
        assert not h.up, f"up after only {i} successes"
        h = h.record(True)
    assert h.up
    assert h.health == h.top


@given(st.integers(2, 8), st.integers(2, 8), st.booleans(), st.integers(1, 60))
def test_alternating_results_never_flap_once_settled(rise, fall, start_up, n):
    h = Hysteresis.start(rise, fall, up=start_up, verified=True)
    state = h.up
    ok = not start_up  # begin with the result that pushes toward a change
    for _ in range(n):
        h = h.record(ok)
        ok = not ok
        assert h.up == state


@given(rises, falls, st.lists(st.booleans(), max_size=80), st.booleans())
def test_counter_stays_in_range_and_transitions_need_runs(rise, fall, results, start_up):
    """Any sequence: the counter stays in 0..top, and every state change is preceded by
    at least rise (or fall) consecutive results of the same kind."""
    h = Hysteresis.start(rise, fall, up=start_up, verified=True)
    run_ok = run_bad = 0
    for ok in results:
        before = h.up
        h = h.record(ok)
        run_ok = run_ok + 1 if ok else 0
        run_bad = 0 if ok else run_bad + 1
        assert 0 <= h.health <= rise + fall - 1
        assert h.up == is_up(h.health, rise)
        if h.up and not before:
            assert run_ok >= rise
        if before and not h.up:
            assert run_bad >= fall


def test_start_values():
    assert Hysteresis.start(2, 3, up=False).health == 0
    assert Hysteresis.start(2, 3, up=True).health == 2  # HAProxy: will fall at first failure
    assert Hysteresis.start(2, 3, up=True, verified=True).health == 4


def test_settled_and_forced_down():
    h = Hysteresis.start(2, 3, up=True, verified=True)
    assert h.settled
    assert not h.record(False).settled
    d = h.forced_down()
    assert d.health == 0 and not d.up and d.settled


@pytest.mark.parametrize("health,text", [(4, "UP"), (3, "UP 2/3"), (2, "UP 1/3"), (1, "DOWN 1/2"), (0, "DOWN")])
def test_describe_like_haproxy_stats(health, text):
    assert Hysteresis(2, 3, health).describe() == text


@pytest.mark.parametrize("rise,fall,health", [(0, 3, 0), (2, 0, 0), (2, 3, 5), (2, 3, -1)])
def test_invalid_values_are_rejected(rise, fall, health):
    with pytest.raises(ValueError):
        Hysteresis(rise, fall, health)
