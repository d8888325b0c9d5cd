"""Passive detection policy: consecutive errors, layer4/layer7, the ejection cap, timed ejections."""

from __future__ import annotations

import pytest

from herder.health.passive import ErrorKind, PassiveDetector, PassivePolicy, Verdict

pytestmark = pytest.mark.unit


def observe(d: PassiveDetector, server: str, ok: bool, kind="connect", policy=None, size=10, now=0.0, timed=False):
    return d.observe("web", server, ok, kind, policy or PassivePolicy(error_limit=3), pool_size=size, now=now,
                     timed=timed)


def test_limit_of_consecutive_errors_ejects():
    d = PassiveDetector()
    assert observe(d, "s1", False)[0] is Verdict.NONE
    assert observe(d, "s1", False)[0] is Verdict.NONE
    verdict, why = observe(d, "s1", False, "timeout")
    assert verdict is Verdict.EJECT
    assert why == "passive: 3 consecutive errors (last: timeout)"
    assert d.ejected("web", "s1")
    # further errors of an ejected server change nothing
    assert observe(d, "s1", False)[0] is Verdict.NONE


def test_a_success_resets_the_count():
    d = PassiveDetector()
    for _ in range(2):
        observe(d, "s1", False)
    observe(d, "s1", True)
    assert d.errors("web", "s1") == 0
    for _ in range(2):
        assert observe(d, "s1", False)[0] is Verdict.NONE


def test_layer4_ignores_5xx_and_layer7_counts_them():
    d = PassiveDetector()
    l4 = PassivePolicy(error_limit=2, observe="layer4")
    for _ in range(5):
        assert observe(d, "s1", False, "http_5xx", l4)[0] is Verdict.NONE
    assert d.errors("web", "s1") == 0
    l7 = PassivePolicy(error_limit=2, observe="layer7")
    observe(d, "s2", False, ErrorKind.HTTP_5XX, l7)
    assert observe(d, "s2", False, "http_5xx", l7)[0] is Verdict.EJECT


def test_cap_on_the_share_of_a_pool():
    d = PassiveDetector()
    policy = PassivePolicy(error_limit=1, max_ejected_percent=20)
    assert policy.allowed(10) == 2
    assert observe(d, "s1", False, policy=policy)[0] is Verdict.EJECT
    assert observe(d, "s2", False, policy=policy)[0] is Verdict.EJECT
    verdict, why = observe(d, "s3", False, policy=policy)
    assert verdict is Verdict.CAPPED
    assert "not ejected: 2 of 10 server(s) already ejected" in why
    assert not d.ejected("web", "s3")
    d.release("web", "s1")
    assert observe(d, "s3", False, policy=policy)[0] is Verdict.EJECT


def test_at_least_one_ejection_when_the_percentage_allows_any():
    assert PassivePolicy(max_ejected_percent=10).allowed(3) == 1
    assert PassivePolicy(max_ejected_percent=0).allowed(100) == 0
    assert PassivePolicy(max_ejected_percent=50).allowed(10) == 5


def test_timed_ejections_come_due():
    d = PassiveDetector()
    policy = PassivePolicy(error_limit=1, eject_time=30)
    observe(d, "s1", False, policy=policy, now=100.0, timed=True)
    observe(d, "s2", False, policy=policy, now=105.0, timed=False)
    assert d.next_deadline() == 130.0
    assert d.due(129.0) == []
    assert d.due(130.0) == [("web", "s1")]
    assert d.release("web", "s1") and not d.release("web", "s1")
    assert d.next_deadline() is None  # s2 waits for the active checks


def test_forget_and_bad_kind():
    d = PassiveDetector()
    observe(d, "s1", False)
    d.forget("web")
    assert d.errors("web", "s1") == 0
    with pytest.raises(ValueError):
        observe(d, "s1", False, "bogus")


@pytest.mark.parametrize("kwargs", [{"error_limit": 0}, {"observe": "layer5"}, {"max_ejected_percent": 101}])
def test_invalid_policy(kwargs):
    with pytest.raises(ValueError):
        PassivePolicy(**kwargs)
