"""Check timing: HAProxy's srv_getinter, defaults, spread and the start-up stagger."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herder.health.hysteresis import Hysteresis
from herder.health.timing import CheckTiming, stagger

pytestmark = pytest.mark.unit


def test_haproxy_defaults():
    t = CheckTiming()
    assert (t.inter, t.rise, t.fall, t.spread_checks) == (2.0, 2, 3, 0)
    assert t.check_timeout == 2.0  # no timeout: bounded by inter, as HAProxy without `timeout check`


def test_without_fastinter_and_downinter_everything_is_inter():
    t = CheckTiming(inter=1.5)
    for health in range(5):
        assert t.interval(Hysteresis(2, 3, health)) == 1.5


# (health counter with rise 2 fall 3, expected interval): inter 10, fastinter 1, downinter 30
@pytest.mark.parametrize("health,expected", [(4, 10.0), (3, 1.0), (2, 1.0), (1, 1.0), (0, 30.0)])
def test_srv_getinter(health, expected):
    t = CheckTiming(inter=10, fastinter=1, downinter=30)
    assert t.interval(Hysteresis(2, 3, health)) == expected


def test_timeout_overrides_inter():
    assert CheckTiming(inter=5, timeout=0.5).check_timeout == 0.5


def test_from_spec_fills_defaults():
    t = CheckTiming.from_spec({"type": "tcp", "inter": 0.2, "fastinter": None, "rise": 1})
    assert (t.inter, t.fastinter, t.rise, t.fall) == (0.2, None, 1, 3)


@given(st.floats(0.01, 100), st.integers(0, 50), st.floats(0, 0.999999))
def test_spread_stays_within_the_percentage(inter, spread, rand):
    t = CheckTiming(inter=inter, spread_checks=spread)
    d = t.next_delay(Hysteresis(2, 3, 4), rand)
    assert inter * (1 - spread / 100) - 1e-9 <= d <= inter * (1 + spread / 100) + 1e-9


def test_no_spread_is_exact():
    assert CheckTiming(inter=2).next_delay(Hysteresis(2, 3, 4), 0.9) == 2.0


def test_stagger_spreads_first_checks_evenly():
    delays = [stagger(i, 500, 1.0) for i in range(500)]
    assert delays[0] == 0.0 and max(delays) < 1.0
    assert len(set(delays)) == 500
    gaps = {round(b - a, 9) for a, b in zip(delays, delays[1:], strict=False)}
    assert gaps == {0.002}


def test_stagger_rejects_bad_index():
    with pytest.raises(ValueError):
        stagger(3, 3, 1.0)


@pytest.mark.parametrize("kwargs", [{"inter": 0}, {"fastinter": -1}, {"rise": 0}, {"spread_checks": 51}])
def test_invalid_timing(kwargs):
    with pytest.raises(ValueError):
        CheckTiming(**kwargs)
