"""The ``health`` component: runs every pool's checks and reports transitions to the pool state.

Theory of operation
-------------------
The checker subscribes to the pool state and keeps one :class:`ServerChecks` per server
of every pool that declares checks (``[[pools.NAME.checks]]``), whether the server was
declared in the config or found by discovery. Each check of a server runs as its own
asyncio task: probe, feed the result to that check's rise/fall counter
(:mod:`herder.health.hysteresis`), sleep the interval :mod:`herder.health.timing` computes
from the counter (inter / fastinter / downinter, plus spread), repeat. The next check is
scheduled when the current one has completed, as in HAProxy, so a slow server never has
two checks in flight.

A server is UP when *every* check of its pool says UP and passive detection has not
ejected it (keepalived: every checker of a real server must pass). When that combined
state changes, the checker calls ``pool_state.set_health(pool, server, Health(state,
reason, since))``; the reason is the result that caused the change ("L7 status 500"),
prefixed with the check's name when the pool has several checks. The pool state logs the
transition (one line, with the reason), so this module does not log it again. It logs, at
INFO, a check whose result changed without changing the server's state ("UP 2/3"), and
every probe result at DEBUG. While a server stays DOWN, a change in why it fails updates
the reason (the state and ``since`` stay), so the status output says why it is down now.

When servers appear (at start, or a discovery batch), their first checks are staggered
over the interval; when a server goes away its tasks are cancelled (an exec check's
process group is killed with it); when a server's address or its pool's checks change,
its checks restart, keeping the server's state.

Passive health (:mod:`herder.health.passive`): data planes call :meth:`HealthChecker.observe`
with each outcome; an ejection marks the server DOWN and forces its counters to 0, so it
comes back only through ``rise`` passing active checks (or after ``eject_time`` in a pool
without checks). Data planes find the checker with :func:`checker_for`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from herder.config.native import register_pool_key
from herder.config.schema import Duration, Field, Int, Str, Table

# The probe modules register their check types on import.
from herder.health import dns as _dns  # noqa: F401
from herder.health import exec as _exec  # noqa: F401
from herder.health import http as _http  # noqa: F401
from herder.health import tcp as _tcp  # noqa: F401
from herder.health.base import Layer, Probe, ProbeResult, Target, check_label, make_probe, target_for
from herder.health.hysteresis import Hysteresis
from herder.health.passive import ErrorKind, PassiveDetector, PassivePolicy, Verdict
from herder.health.timing import CheckTiming, stagger
from herder.pool.model import Endpoint, Health, HealthState, frozen_map
from herder.pool.state import PoolState, PoolView, Snapshot
from herder.runtime import register_component

if TYPE_CHECKING:
    from herder.runtime import Runtime

__all__ = ["CheckRun", "HealthChecker", "ServerChecks", "checker_for"]

log = logging.getLogger(__name__)


class CheckRun:
    """One check of one server: its probe, timing, rise/fall counter and last result."""

    __slots__ = ("label", "spec", "probe", "timing", "target", "hyst", "last", "task", "count")

    def __init__(self, label: str, spec: Mapping[str, object], probe: Probe, timing: CheckTiming,
                 target: Target, hyst: Hysteresis) -> None:
        self.label = label
        self.spec = spec
        self.probe = probe
        self.timing = timing
        self.target = target
        self.hyst = hyst
        self.last: ProbeResult | None = None
        self.task: asyncio.Task | None = None
        #: Checks completed so far.
        self.count = 0

    def status(self) -> dict[str, Any]:
        """This check as plain JSON data."""
        last = self.last
        return {
            "name": self.label,
            "type": self.probe.kind,
            "target": str(self.target.address),
            "status": self.hyst.describe(),
            "ok": None if last is None else last.ok,
            "layer": None if last is None else last.layer.value,
            "result": None if last is None else last.detail,
            "duration_ms": None if last is None else round(last.duration_s * 1000, 3),
            "checks": self.count,
            "inter": self.timing.inter,
            "rise": self.timing.rise,
            "fall": self.timing.fall,
        }


class ServerChecks:
    """Every check of one server, and the combined state last reported for it."""

    __slots__ = ("pool", "server", "ident", "runs", "up", "reason", "since")

    def __init__(self, pool: str, server: str, ident: tuple, runs: list[CheckRun], health: Health) -> None:
        self.pool = pool
        self.server = server
        #: What the checks were built from: (address, the pool's check specs).
        self.ident = ident
        self.runs = runs
        self.up = health.serving
        self.reason = health.reason
        self.since = health.since

    def cancel(self) -> list[asyncio.Task]:
        tasks = [r.task for r in self.runs if r.task is not None and not r.task.done()]
        for t in tasks:
            t.cancel()
        return tasks


_by_runtime: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def checker_for(runtime: Runtime) -> HealthChecker | None:
    """The health checker of ``runtime`` (for data planes reporting passive errors)."""
    return _by_runtime.get(runtime)


class HealthChecker:
    """The ``health`` component (see the module docstring)."""

    name = "health"

    def __init__(self, pool_state: PoolState, *, rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool_state = pool_state
        self.detector = PassiveDetector()
        self._rng = rng
        self._clock = clock
        self._servers: dict[tuple[str, str], ServerChecks] = {}
        self._pool_versions: dict[str, int] = {}
        self._policies: dict[str, PassivePolicy] = {}
        self._checked_pools: set[str] = set()
        self._capped: set[tuple[str, str]] = set()
        self._sub = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._orphans: set[asyncio.Task] = set()
        self._release_handle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Subscribe to the pool state; checks start for every checked server."""
        self._loop = asyncio.get_running_loop()
        self._sub = self.pool_state.subscribe(self._on_snapshot, name="health")
        n = len(self._servers)
        if n:
            log.info("health checks started for %d server(s) in %d pool(s)", n, len(self._checked_pools))

    async def stop(self) -> None:
        """Cancel every check (exec checks' process groups are killed) and wait for them."""
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._release_handle is not None:
            self._release_handle.cancel()
        tasks: list[asyncio.Task] = list(self._orphans)
        for entry in self._servers.values():
            tasks += entry.cancel()
        self._servers.clear()
        self._pool_versions.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ reading

    def server_checks(self, pool: str, server: str) -> ServerChecks | None:
        """The checks of one server, or None when it is not checked."""
        return self._servers.get((pool, server))

    def status(self) -> dict[str, Any]:
        """Every checked server and passive state as plain JSON data (``GET /health``)."""
        out: dict[str, Any] = {}
        for (pool, server), e in sorted(self._servers.items()):
            ej = self.detector.ejection(pool, server)
            out.setdefault(pool, {})[server] = {
                "state": "up" if e.up else "down",
                "reason": e.reason,
                "ejected": None if ej is None else ej.reason,
                "passive_errors": self.detector.errors(pool, server),
                "checks": [r.status() for r in e.runs],
            }
        return out

    # ------------------------------------------------------------------ pool state -> tasks

    def _on_snapshot(self, snap: Snapshot) -> None:
        if self._loop is None:
            return
        for name, pv in snap.pools.items():
            if self._pool_versions.get(name) == pv.version:
                continue
            self._pool_versions[name] = pv.version
            self._sync_pool(pv)
        for name in [p for p in self._pool_versions if p not in snap.pools]:
            del self._pool_versions[name]
            self._policies.pop(name, None)
            self._checked_pools.discard(name)
            self._drop(lambda k, name=name: k[0] == name)
            self.detector.forget(name)

    def _drop(self, which: Callable[[tuple[str, str]], bool]) -> None:
        for key in [k for k in self._servers if which(k)]:
            entry = self._servers.pop(key)
            self._orphans.update(entry.cancel())
            self.detector.forget(*key)
        self._orphans = {t for t in self._orphans if not t.done()}

    def _sync_pool(self, pv: PoolView) -> None:
        pool = pv.name
        passive = pv.pool.settings.get("passive")
        if isinstance(passive, Mapping):
            self._policies[pool] = PassivePolicy.from_spec(passive)
        else:
            self._policies.pop(pool, None)
        checks = pv.pool.checks
        if checks:
            self._checked_pools.add(pool)
        else:
            self._checked_pools.discard(pool)
        present = {v.name for v in pv.servers}
        self._drop(lambda k: k[0] == pool and (k[1] not in present or not checks))
        if not checks:
            return
        fresh: list[ServerChecks] = []
        for view in pv.servers:
            key = (pool, view.name)
            if view.server.meta.get("check") is False:
                # a HAProxy `server` line without `check`: never checked, always up
                self._drop(lambda k, key=key: k == key)
                continue
            port = view.server.meta.get("check_port")
            if isinstance(port, int):
                # a per-server check port (HAProxy `server ... check port N`)
                checks_for = tuple({**c, "port": c.get("port") or port} for c in checks)
            else:
                checks_for = checks
            ident = (view.server.address, checks_for)
            old = self._servers.get(key)
            if old is not None and old.ident == ident:
                continue
            if old is not None:
                self._orphans.update(old.cancel())
                log.info("pool %s: server %s: checks restarted (address or checks changed)", pool, view.name)
            entry = self._build(pool, view.name, view.server.address, view.health, checks_for,
                                verified=old is not None)
            if entry is not None:
                self._servers[key] = entry
                fresh.append(entry)
        loop = self._loop
        assert loop is not None
        n = len(fresh)
        for i, entry in enumerate(fresh):
            for run in entry.runs:
                delay = stagger(i, n, run.timing.interval(run.hyst), self._rng(), run.timing.spread_checks)
                run.task = loop.create_task(self._run(entry, run, delay),
                                            name=f"health {entry.pool}/{entry.server} {run.label}")

    def _build(self, pool: str, server: str, address: Endpoint, health: Health,
               checks: tuple[Mapping[str, object], ...], *, verified: bool) -> ServerChecks | None:
        runs = []
        for i, spec in enumerate(checks):
            timing = CheckTiming.from_spec(spec)
            try:
                probe = make_probe(spec, timing.check_timeout)
            except (KeyError, ValueError) as e:
                log.error("pool %s: check %d (%s) cannot be built: %s", pool, i, spec.get("type"), e)
                return None
            hyst = Hysteresis.start(timing.rise, timing.fall, health.serving, verified=verified)
            runs.append(CheckRun(check_label(spec, i, checks), spec, probe, timing,
                                 target_for(pool, server, address, spec), hyst))
        return ServerChecks(pool, server, (address, checks), runs, health)

    # ------------------------------------------------------------------ the check loop

    async def _run(self, entry: ServerChecks, run: CheckRun, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            result = await self._probe(run)
            run.count += 1
            try:
                self._record(entry, run, result)
            except Exception:  # a bug here must not stop this server's checks
                log.exception("health %s/%s: recording a result failed", entry.pool, entry.server)
            await asyncio.sleep(run.timing.next_delay(run.hyst, self._rng()))

    async def _probe(self, run: CheckRun) -> ProbeResult:
        # Probes bound themselves by their timeout; this outer bound only catches a probe
        # that does not (a bug), so that one bad probe cannot stop a server's checks.
        limit = run.timing.check_timeout * 2 + 1.0
        try:
            async with asyncio.timeout(limit):
                return await run.probe.check(run.target)
        except TimeoutError:
            return ProbeResult(False, Layer.L7TOUT, f"check overran {limit:.1f}s")
        except Exception as e:
            log.exception("health %s/%s %s: probe failed", run.target.pool, run.target.server, run.label)
            return ProbeResult(False, Layer.L4CON, f"check error: {type(e).__name__}: {e}")

    def _record(self, entry: ServerChecks, run: CheckRun, result: ProbeResult) -> None:
        if self._servers.get((entry.pool, entry.server)) is not entry:
            return  # superseded while the probe ran
        previous = run.last
        run.last = result
        run.hyst = run.hyst.record(result.ok)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("check %s/%s %s %s: %s (%s, %.1f ms)", entry.pool, entry.server, run.label,
                      run.target.address, result.detail, run.hyst.describe(), result.duration_s * 1000)
        reason = result.detail if len(entry.runs) == 1 else f"{run.label}: {result.detail}"
        ejected = self.detector.ejected(entry.pool, entry.server)
        up = all(r.hyst.up for r in entry.runs)
        if up and ejected:
            # The active checks passed after a passive ejection: it ends here.
            self.detector.release(entry.pool, entry.server)
        if up != entry.up:
            entry.up = up
            self._publish(entry, HealthState.UP if up else HealthState.DOWN, reason, new_since=True)
            return
        if not up and not result.ok and reason != entry.reason:
            # Still DOWN, for another reason now: keep the status output truthful.
            self._publish(entry, HealthState.DOWN, reason, new_since=False)
        if previous is None or previous.ok != result.ok or previous.detail != result.detail:
            log.info("health check %s/%s %s %s: %s, %s", entry.pool, entry.server, run.label,
                     "passed" if result.ok else "failed", result.detail, run.hyst.describe())

    def _publish(self, entry: ServerChecks, state: HealthState, reason: str, *, new_since: bool) -> None:
        if new_since or entry.since is None:
            entry.since = self._clock()
        entry.reason = reason
        self.pool_state.set_health(entry.pool, entry.server, Health(state, reason, entry.since))

    # ------------------------------------------------------------------ passive health

    def observe(self, pool: str, server: str, ok: bool, kind: ErrorKind | str = ErrorKind.ERROR) -> None:
        """Report the outcome of one real connection or request to ``server``.

        Called by the data planes for every outcome they see (or for a sample of the
        successes: any success resets the error count). Does nothing for a pool without
        a ``passive`` table, or for a server that is already out of traffic.

        Args:
            pool, server: the server (unknown names are ignored: a late report).
            ok: the connection/request succeeded.
            kind: for an error, one of ``connect``, ``timeout``, ``reset``, ``http_5xx``,
                ``error`` (an :class:`~herder.health.passive.ErrorKind` or its value).

        Raises:
            ValueError: ``kind`` is not a known error kind (a caller bug).
        """
        policy = self._policies.get(pool)
        if policy is None:
            return
        pv = self.pool_state.snapshot.pools.get(pool)
        view = pv.server(server) if pv is not None else None
        if pv is None or view is None:
            return
        if not ok and not view.health.serving:
            return
        now = self._clock()
        timed = not pv.pool.checks
        verdict, why = self.detector.observe(pool, server, ok, kind, policy, pool_size=len(pv.servers),
                                             now=now, timed=timed)
        key = (pool, server)
        if ok:
            self._capped.discard(key)
        if verdict is Verdict.CAPPED:
            if key not in self._capped:
                self._capped.add(key)
                log.warning("pool %s: server %s %s", pool, server, why)
            return
        if verdict is not Verdict.EJECT:
            return
        self._capped.discard(key)
        entry = self._servers.get(key)
        if entry is not None:
            for run in entry.runs:
                run.hyst = run.hyst.forced_down()
            entry.up = False
            self._publish(entry, HealthState.DOWN, why, new_since=True)
        else:
            self.pool_state.set_health(pool, server, Health(HealthState.DOWN, why, now))
        if timed:
            self._arm_release()

    def _arm_release(self) -> None:
        if self._loop is None:
            return
        deadline = self.detector.next_deadline()
        if deadline is None:
            return
        if self._release_handle is not None:
            self._release_handle.cancel()
        delay = max(0.0, deadline - self._clock())
        self._release_handle = self._loop.call_later(delay, self._release_due)

    def _release_due(self) -> None:
        self._release_handle = None
        now = self._clock()
        for pool, server in self.detector.due(now):
            ej = self.detector.ejection(pool, server)
            self.detector.release(pool, server)
            if ej is None:
                continue
            self.pool_state.set_health(pool, server, Health(
                HealthState.UP, f"passive: ejection ended after {now - ej.since:.1f}s", now))
        self._arm_release()


# --------------------------------------------------------------------------- registration

register_pool_key("passive", Field(Table({
    "error_limit": Field(Int(1, 100000), default=10,
                         doc="consecutive errors that eject a server (HAProxy error-limit)"),
    "observe": Field(Str(choices=("layer4", "layer7")), default="layer7",
                     doc="layer4: connection errors only; layer7: 5xx responses too (HAProxy observe)"),
    "max_ejected_percent": Field(Int(0, 100), default=10,
                                 doc="at most this share of the pool ejected at once (Envoy max_ejection_percent)"),
    "eject_time": Field(Duration(min=0.001), default=30.0,
                        doc="ejection length in a pool without active checks (Envoy base_ejection_time)"),
}, build=lambda v, path, ctx: frozen_map(v), what="a passive health table"),
    doc="passive health: eject servers after consecutive errors seen by the data planes"))


def _factory(rt: Runtime) -> list[HealthChecker]:
    # Always present, even without checks: a reload may add checks, and data planes may
    # report passive errors for pools without active checks.
    checker = HealthChecker(rt.pool_state)
    _by_runtime[rt] = checker
    return [checker]


register_component("health", _factory, order=20)


def _api_status(rt: Runtime, req: Any) -> tuple[int, Any]:
    checker = checker_for(rt)
    if checker is None:
        return 404, {"error": "no health checker"}
    return 200, checker.status()


try:
    from herder.api.server import add_route
except ImportError:  # the API layer is optional
    pass
else:
    add_route("GET", "/health", _api_status)
