"""The health engine with scripted probes (no sockets): transitions, reasons, tasks, passive."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from herder.health import engine as engine_mod
from herder.health.base import Layer, ProbeResult, Target
from herder.health.engine import HealthChecker
from herder.pool.model import Endpoint, HealthState, Pool, Server, frozen_map
from herder.pool.state import HealthChanged, PoolState

pytestmark = pytest.mark.unit

OK = ProbeResult(True, Layer.L7OK, "L7 status 200")
BAD = ProbeResult(False, Layer.L7STS, "L7 status 500")
REFUSED = ProbeResult(False, Layer.L4CON, "L4 connection refused")


class Scripted:
    """A probe whose answers come from ``script[(label, server)]`` (a callable or a result)."""

    kind = "scripted"
    timeout = 1.0

    def __init__(self, script: dict, label: str) -> None:
        self.script = script
        self.label = label
        self.calls: list[str] = []

    async def check(self, target: Target) -> ProbeResult:
        self.calls.append(target.server)
        r = self.script.get((self.label, target.server), OK)
        if callable(r):
            r = r()
        if isinstance(r, BaseException):
            raise r
        return r


def spec(label: str, **kw) -> object:
    return frozen_map({"type": "scripted", "name": label, "inter": 0.01, "rise": 2, "fall": 3, **kw})


def servers(*names: str) -> tuple[Server, ...]:
    return tuple(Server(n, Endpoint("127.0.0.1", 8000 + i)) for i, n in enumerate(names))


class Harness:
    def __init__(self, monkeypatch, script: dict) -> None:
        self.script = script
        self.probes: list[Scripted] = []

        def make(s, timeout):
            p = Scripted(script, str(s["name"]))
            self.probes.append(p)
            return p

        monkeypatch.setattr(engine_mod, "make_probe", make)
        self.state = PoolState()
        self.events: list[HealthChanged] = []
        self.state.subscribe(lambda snap: self.events.extend(c for c in snap.changes if isinstance(c, HealthChanged)))
        self.checker = HealthChecker(self.state, rng=lambda: 0.0)

    def health(self, pool: str, server: str):
        return self.state.snapshot.pool(pool).server(server).health

    async def until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; events: {self.events}")
            await asyncio.sleep(0.005)

    def transitions(self, server: str) -> list[tuple[str, str]]:
        return [(e.new.state.value, e.new.reason) for e in self.events
                if e.server == server and e.old.state != e.new.state]


def run(coro):
    return asyncio.run(coro)


def test_down_after_fall_failures_and_up_after_rise_successes(monkeypatch):
    h = Harness(monkeypatch, {})
    answers = itertools.chain([OK] * 5, [BAD] * 6, itertools.repeat(OK))
    h.script[("c", "s1")] = lambda: next(answers)

    async def main():
        h.state.load([Pool("web", servers("s1"), checks=(spec("c"),),
                           settings=frozen_map({"initial_state": HealthState.DOWN}))])
        await h.checker.start()
        await h.until(lambda: len(h.transitions("s1")) >= 3)
        await h.checker.stop()

    run(main())
    # DOWN initially; UP after 2 OK; DOWN after 3 BAD (2 more BAD do not matter); UP after 2 OK
    assert h.transitions("s1")[:3] == [("up", "L7 status 200"), ("down", "L7 status 500"), ("up", "L7 status 200")]
    probe = h.probes[0]
    assert len(probe.calls) >= 2 + 3 + 3 + 2  # 5 OK, 6 BAD, then rise


def test_several_checks_combine_and_name_the_failing_one(monkeypatch):
    h = Harness(monkeypatch, {("tcp", "s1"): OK, ("http", "s1"): BAD})

    async def main():
        h.state.load([Pool("web", servers("s1"), checks=(spec("tcp"), spec("http")),
                           settings=frozen_map({"initial_state": HealthState.UP}))])
        await h.checker.start()
        await h.until(lambda: not h.health("web", "s1").serving)
        assert h.health("web", "s1").reason == "http: L7 status 500"
        h.script[("http", "s1")] = OK
        await h.until(lambda: h.health("web", "s1").serving)
        await h.checker.stop()

    run(main())
    assert h.transitions("s1") == [("down", "http: L7 status 500"), ("up", "http: L7 status 200")]


def test_reason_follows_the_failure_while_down(monkeypatch):
    h = Harness(monkeypatch, {("c", "s1"): BAD})

    async def main():
        h.state.load([Pool("web", servers("s1"), checks=(spec("c"),))])
        await h.checker.start()
        await h.until(lambda: h.health("web", "s1").reason == "L7 status 500")
        since = h.health("web", "s1").since
        h.script[("c", "s1")] = REFUSED
        await h.until(lambda: h.health("web", "s1").reason == "L4 connection refused")
        assert h.health("web", "s1").state is HealthState.DOWN
        assert h.health("web", "s1").since == since
        await h.checker.stop()

    run(main())


def test_servers_that_come_and_go_start_and_stop_their_checks(monkeypatch):
    h = Harness(monkeypatch, {})

    async def main():
        h.state.load([Pool("web", servers("s1"), checks=(spec("c"),))])
        await h.checker.start()
        h.state.set_servers("web", "file:x", (Server("d1", Endpoint("127.0.0.1", 9001)),
                                              Server("d2", Endpoint("127.0.0.1", 9002))))
        await h.until(lambda: h.health("web", "d2").serving)
        assert h.checker.server_checks("web", "d1") is not None
        h.state.set_servers("web", "file:x", ())
        await asyncio.sleep(0.05)
        assert h.checker.server_checks("web", "d1") is None
        calls = sum(p.calls.count("d1") for p in h.probes)
        await asyncio.sleep(0.1)
        assert sum(p.calls.count("d1") for p in h.probes) == calls  # no more checks of a gone server
        tasks = [r.task for r in h.checker.server_checks("web", "s1").runs]
        await h.checker.stop()
        assert all(t.done() for t in tasks)

    run(main())


def test_a_probe_that_raises_counts_as_a_failure(monkeypatch):
    h = Harness(monkeypatch, {("c", "s1"): RuntimeError("probe bug")})

    async def main():
        h.state.load([Pool("web", servers("s1"), checks=(spec("c", rise=1, fall=1),),
                           settings=frozen_map({"initial_state": HealthState.UP}))])
        await h.checker.start()
        await h.until(lambda: not h.health("web", "s1").serving)
        await h.checker.stop()

    run(main())
    assert h.transitions("s1") == [("down", "check error: RuntimeError: probe bug")]


def test_passive_ejection_needs_rise_active_successes(monkeypatch):
    h = Harness(monkeypatch, {})

    async def main():
        h.state.load([Pool("web", servers("s1", "s2", "s3"), checks=(spec("c", inter=0.05),),
                           settings=frozen_map({"initial_state": HealthState.UP,
                                                "passive": {"error_limit": 3, "max_ejected_percent": 34}}))])
        await h.checker.start()
        for _ in range(3):
            h.checker.observe("web", "s1", False, "connect")
        assert h.health("web", "s1").reason == "passive: 3 consecutive errors (last: connect)"
        assert not h.health("web", "s1").serving
        # the cap (34% of 3 -> 1 server) keeps s2 in
        for _ in range(5):
            h.checker.observe("web", "s2", False, "http_5xx")
        assert h.health("web", "s2").serving
        # the active checks pass: s1 comes back after rise successes
        await h.until(lambda: h.health("web", "s1").serving)
        assert h.health("web", "s1").reason == "L7 status 200"
        assert not h.checker.detector.ejected("web", "s1")
        await h.checker.stop()

    run(main())


def test_passive_without_active_checks_is_timed(monkeypatch):
    h = Harness(monkeypatch, {})

    async def main():
        h.state.load([Pool("web", servers("s1", "s2"),
                           settings=frozen_map({"passive": {"error_limit": 2, "eject_time": 0.1,
                                                            "max_ejected_percent": 50}}))])
        await h.checker.start()
        h.checker.observe("web", "s1", False, "timeout")
        h.checker.observe("web", "s1", True)
        h.checker.observe("web", "s1", False, "timeout")
        assert h.health("web", "s1").serving  # the success reset the count
        h.checker.observe("web", "s1", False, "timeout")
        assert not h.health("web", "s1").serving
        await h.until(lambda: h.health("web", "s1").serving)
        assert h.health("web", "s1").reason.startswith("passive: ejection ended after")
        h.checker.observe("web", "nope", False, "timeout")  # unknown servers are ignored
        await h.checker.stop()

    run(main())


def test_passive_is_off_without_a_passive_table(monkeypatch):
    h = Harness(monkeypatch, {})

    async def main():
        h.state.load([Pool("web", servers("s1"))])
        await h.checker.start()
        for _ in range(50):
            h.checker.observe("web", "s1", False, "connect")
        assert h.health("web", "s1").serving
        await h.checker.stop()

    run(main())


def test_status_output(monkeypatch):
    h = Harness(monkeypatch, {("c", "s1"): BAD})

    async def main():
        h.state.load([Pool("web", servers("s1"), checks=(spec("c"),))])
        await h.checker.start()
        await h.until(lambda: (h.checker.server_checks("web", "s1").runs[0].count or 0) >= 1)
        st = h.checker.status()
        await h.checker.stop()
        return st

    st = run(main())
    s1 = st["web"]["s1"]
    assert s1["state"] == "down" and s1["reason"] == "L7 status 500"
    assert s1["checks"][0]["layer"] == "L7STS" and s1["checks"][0]["status"] == "DOWN"
