"""Weights: over 100,000 picks, shares match weights within 1 percentage point.

Run once per algorithm (the issue's check); keyed algorithms get uniform keys. Ring hash
meets the bound on its own table only with enough points per server: with libketama's
160 points per unit of weight, shares vary by about 1/sqrt(160) (~8% relative), which
test_ring_share_spread_at_default_points states explicitly.
"""

from __future__ import annotations

import numpy as np
import pytest

from herder.balance import resolve

pytestmark = pytest.mark.unit

WEIGHTS = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 10)]
FAIR = {n: w / sum(w for _, w in WEIGHTS) for n, w in WEIGHTS}
PICKS = 100_000


def keys(n: int = PICKS) -> list[int]:
    return np.random.default_rng(3).integers(0, 2**64, size=n, dtype=np.uint64).tolist()


def shares(names) -> dict[str, float]:
    names = list(names)
    return {n: names.count(n) / len(names) for n in FAIR}


def assert_within_one_point(got: dict[str, float]) -> None:
    for n, fair in FAIR.items():
        assert abs(got[n] - fair) <= 0.01, (n, got[n], fair)


@pytest.mark.parametrize("name", ["roundrobin", "static-rr", "random"])
def test_keyless_shares_follow_weights(name):
    opts = {"seed": 11} if name == "random" else {}
    p = resolve(name, opts).build(WEIGHTS)
    assert_within_one_point(shares(p.pick().name for _ in range(PICKS)))


def test_random_with_uniform_keys_follows_weights():
    p = resolve("random").build(WEIGHTS)
    assert_within_one_point(shares(p.pick(k).name for k in keys()))


@pytest.mark.parametrize("name,options", [
    ("hash", {}),
    ("maglev", {}),
    ("rendezvous", {}),
    ("ring", {"points": 4000}),
])
def test_hashing_shares_follow_weights_on_uniform_keys(name, options):
    p = resolve(name, options).build(WEIGHTS)
    assert_within_one_point(shares(p.pick(k).name for k in keys()))
    own = p.ownership()
    if own is not None:  # the table itself, exactly
        for n, share in zip(p.names, own, strict=True):
            assert abs(share - FAIR[n]) <= 0.01


def test_ring_share_spread_at_default_points():
    """Documented, not hidden: 160 points per server give shares within ~25% of fair."""
    p = resolve("ring").build([(f"s{i}", 1) for i in range(50)])
    ratio = p.ownership() * 50
    assert 0.6 < ratio.min() and ratio.max() < 1.4
    assert ratio.std() < 0.12


def test_roundrobin_is_exact_over_one_period():
    p = resolve("roundrobin").build(WEIGHTS)
    total = sum(w for _, w in WEIGHTS)
    for _ in range(3):
        got = [p.pick().name for _ in range(total)]
        assert {n: got.count(n) for n, _ in WEIGHTS} == dict(WEIGHTS)
