"""Tracked objects: scripts, interfaces, and herder's own data planes; and what they do to
an instance's priority.

Theory of operation
-------------------
Three kinds of tracked object, each with a boolean "OK" and a reason:

* :class:`ScriptTracker` -- keepalived's ``vrrp_script``: runs ``script`` every
  ``interval`` through :func:`herder.proc.run_command` (its own process group, killed
  whole after ``timeout``; a string runs through ``/bin/sh -c``), exit status 0 is a
  success, and ``rise``/``fall`` consecutive results move it (HAProxy's one-counter
  hysteresis, :mod:`herder.health.hysteresis`). It starts OK (keepalived), or failed
  with ``init_fail``. A script runs only if an instance tracks it, once for all of them.
* :class:`LinkMonitor` -- tracked interfaces and each instance's own interface: a link
  is OK while it is administratively up and has carrier (``IFF_UP`` and
  ``IFF_RUNNING``). It listens to netlink link events (RTMGRP_LINK) on a socket of its
  own in the event loop and decodes them with pyroute2's marshal, so a cable pull is
  seen at once rather than at the next poll.
* :class:`ServiceTracker` -- herder's own data planes, in the same process: a service
  (or pool) is OK while its pool has at least ``min_up`` usable servers (effective weight
  above 0) in the pool state. It subscribes to the pool state, so an L7 or L4 pool whose
  servers all fail their health checks moves the VIPs to a director that still has some.

:func:`evaluate` turns the results into ``(adjust, faults)`` for
:meth:`~herder.ha.vrrp.machine.VrrpMachine.set_tracking`, with keepalived's rules:

* weight 0: a failure means FAULT (``reverse``: success means FAULT);
* weight > 0: added to the priority while OK (``reverse``: subtracted while OK);
* weight < 0: added (so subtracted) while failed (``reverse``: its absolute value added);
* the instance's own interface down means FAULT;
* members of a sync group get weight 0 for scripts and interfaces (keepalived sets their
  weights to zero, so that every member has the same priority), with a warning;
* an address owner (priority 255) never changes priority; only FAULT applies.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from herder import proc
from herder.ha.vrrp.settings import InstanceSpec, ScriptSpec
from herder.health.hysteresis import Hysteresis

__all__ = ["LinkMonitor", "ScriptTracker", "ServiceTracker", "TrackResult", "evaluate"]

log = logging.getLogger(__name__)

RTMGRP_LINK = 1
IFF_UP = 0x1
IFF_RUNNING = 0x40


@dataclass(frozen=True, slots=True)
class TrackResult:
    """One tracked object's current state."""

    ok: bool
    reason: str


def _apply(label: str, ok: bool, weight: int, reverse: bool, adjust: int, faults: list[str],
           why: str) -> int:
    if weight == 0:
        if ok == reverse:
            faults.append(f"{label} {'up (reverse)' if reverse else 'down'}: {why}")
    elif weight > 0:
        if ok:
            adjust += -weight if reverse else weight
    elif not ok:
        adjust += -weight if reverse else weight
    return adjust


def evaluate(spec: InstanceSpec, scripts: Mapping[str, ScriptSpec], script_results: Mapping[str, TrackResult],
             links: Mapping[str, TrackResult], services: Mapping[str, TrackResult], *,
             own_links: Iterable[str], in_sync_group: bool = False) -> tuple[int, tuple[str, ...]]:
    """The instance's priority adjustment and fault reasons from the current results."""
    adjust = 0
    faults: list[str] = []
    for ifname in own_links:
        res = links.get(ifname)
        if res is not None and not res.ok:
            faults.append(f"interface {ifname} down: {res.reason}")
    for ref in spec.track_scripts:
        res = script_results.get(ref.name)
        if res is None:
            continue
        weight = scripts[ref.name].weight if ref.weight is None else ref.weight
        reverse = ref.reverse or (ref.weight is None and scripts[ref.name].reverse)
        adjust = _apply(f"script {ref.name}", res.ok, 0 if in_sync_group else weight, reverse, adjust, faults,
                        res.reason)
    for ref in spec.track_interfaces:
        res = links.get(ref.name)
        if res is None:
            faults.append(f"interface {ref.name} missing")
            continue
        adjust = _apply(f"interface {ref.name}", res.ok, 0 if in_sync_group else (ref.weight or 0), ref.reverse,
                        adjust, faults, res.reason)
    for svc in spec.track_services:
        res = services.get(svc.label)
        if res is None:
            continue
        adjust = _apply(svc.label, res.ok, svc.weight, svc.reverse, adjust, faults, res.reason)
    return adjust, tuple(faults)


class ScriptTracker:
    """Runs one vrrp_script on its interval; calls ``on_change()`` when OK flips."""

    def __init__(self, spec: ScriptSpec, on_change: Callable[[], None], *, env: Mapping[str, str] | None = None):
        self.spec = spec
        self.on_change = on_change
        self.env = dict(env or {})
        self.hyst = Hysteresis.start(spec.rise, spec.fall, up=not spec.init_fail)
        self.result = TrackResult(self.hyst.up, "initial state" + (" (init_fail)" if spec.init_fail else ""))
        self.runs = 0
        self.last_detail = ""
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"vrrp script {self.spec.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def check_once(self) -> bool:
        """Run the script once and record the result; True if the OK state changed."""
        s = self.spec
        timeout = s.timeout_s or s.interval_s
        try:
            res = await proc.run_command(s.script, timeout=timeout, env=self.env, shell=True)
        except OSError as e:
            ok, detail = False, f"cannot run: {e.strerror or e}"
        else:
            if res.timed_out:
                ok, detail = False, f"timed out after {timeout:g}s (killed)"
            elif res.returncode == 0:
                ok, detail = True, "exit status 0"
            elif res.returncode is not None and res.returncode < 0:
                ok, detail = False, f"killed by signal {-res.returncode}"
            else:
                ok, detail = False, f"exit status {res.returncode}"
        self.runs += 1
        self.last_detail = detail
        before = self.hyst.up
        self.hyst = self.hyst.record(ok)
        if self.hyst.up != before:
            self.result = TrackResult(self.hyst.up, detail)
            log.info("vrrp_script %s: %s -> %s (%s)", s.name, "OK" if before else "KO",
                     "OK" if self.hyst.up else "KO", detail)
            return True
        if not self.hyst.up:
            self.result = TrackResult(False, detail)
        return False

    async def _run(self) -> None:
        interval = self.spec.interval_s
        next_at = time.monotonic()
        while True:
            if await self.check_once():
                self.on_change()
            next_at = max(next_at + interval, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    def status(self) -> dict:
        return {"script": self.spec.script, "status": "OK" if self.result.ok else "KO",
                "counter": self.hyst.describe(), "last": self.last_detail, "runs": self.runs,
                "weight": self.spec.weight, "interval": self.spec.interval_s}


class LinkMonitor:
    """Up/down state of interfaces, kept current from netlink link events."""

    def __init__(self, on_change: Callable[[set[str]], None]) -> None:
        self.on_change = on_change
        self.results: dict[str, TrackResult] = {}
        self._sock: socket.socket | None = None
        self._marshal = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, initial: Iterable[tuple[str, bool]]) -> None:
        """Subscribe to link events, then take the initial states (a dump, by the caller)."""
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        self._marshal = MarshalRtnl()
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        s.bind((0, RTMGRP_LINK))
        self._sock = s
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(s.fileno(), self._on_readable)
        for name, up in initial:
            self.results[name] = TrackResult(up, "up" if up else "link down")

    def _on_readable(self) -> None:
        assert self._sock is not None and self._marshal is not None
        changed: set[str] = set()
        for _ in range(64):
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.warning("netlink link monitor: %s", e.strerror or e)
                break
            for msg in self._marshal.parse(data):
                name = msg.get("IFLA_IFNAME")
                if not name:
                    continue
                event = msg.get("event")
                if event == "RTM_DELLINK":
                    up, why = False, "interface deleted"
                else:
                    flags = msg["flags"]
                    up = bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)
                    why = "up" if up else ("administratively down" if not flags & IFF_UP else "no carrier")
                old = self.results.get(name)
                if old is None or old.ok != up:
                    log.info("interface %s is %s", name, "UP" if up else f"DOWN ({why})")
                    changed.add(name)
                self.results[name] = TrackResult(up, why)
        if changed:
            self.on_change(changed)

    def stop(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


class ServiceTracker:
    """Usable servers of herder pools, from the pool state; OK when >= ``min_up``."""

    def __init__(self, pool_state, wanted: Mapping[str, tuple[str, int]], on_change: Callable[[], None]) -> None:
        """``wanted`` maps a label (``service www`` / ``pool web``) to (pool name, min_up)."""
        self.pool_state = pool_state
        self.wanted = dict(wanted)
        self.on_change = on_change
        self.results: dict[str, TrackResult] = {}
        self._sub = None

    def start(self) -> None:
        if self.wanted:
            self._sub = self.pool_state.subscribe(self._update, name="vrrp track_service")

    def _update(self, snap) -> None:
        changed = False
        for label, (pool, min_up) in self.wanted.items():
            view = snap.pools.get(pool)
            usable = 0 if view is None else sum(1 for s in view.servers if s.effective_weight > 0)
            ok = usable >= min_up
            res = TrackResult(ok, f"{usable} usable server(s) in pool {pool}, {min_up} needed")
            old = self.results.get(label)
            if old is None or old.ok != ok:
                if old is not None:
                    log.info("%s: %s -> %s (%s)", label, "OK" if old.ok else "KO", "OK" if ok else "KO", res.reason)
                changed = True
            self.results[label] = res
        if changed:
            self.on_change()

    def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
