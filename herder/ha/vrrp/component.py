"""The ``vrrp`` component: every ``[vrrp]`` instance of the configuration, running.

Theory of operation
-------------------
At start, for each instance: find its interface (and create its VMAC), pick its primary
address (``unicast_src_ip``, else the interface's first IPv4 address or its IPv6
link-local), open (or share) the raw socket of its interface and family, and build its
:class:`~herder.ha.vrrp.machine.VrrpMachine`, :class:`~herder.ha.vrrp.actions.HostActions`
and :class:`~herder.ha.vrrp.io.InstanceDriver`. Then the trackers start (scripts,
interfaces, herder's own pools; :mod:`herder.ha.vrrp.track`), each instance gets its
first tracking result (so an instance whose interface is down starts in FAULT), and the
machines start: every instance enters BACKUP (an address owner with ``state MASTER``
enters MASTER) and the election runs on the wire.

Whenever a tracked object changes, every instance's ``(adjust, faults)`` is recomputed
(:func:`herder.ha.vrrp.track.evaluate`) and given to its machine if it changed.

Sync groups (keepalived's ``vrrp_sync_group``): members move together.

* FAULT: while a member has a fault of its own, every other member is in FAULT too
  (reason ``sync group G: VI_2 in fault``).
* MASTER: when a member becomes MASTER, the BACKUP members are promoted at once.
* BACKUP: when a member leaves MASTER for BACKUP (a higher-priority router appeared),
  the other MASTER members step down.

The group's own notify scripts run when the group's state changes (FAULT if a member is
in FAULT, MASTER once all are MASTER, BACKUP otherwise).

At stop, every master sends priority 0 and removes its VIPs, the notify_stop scripts run
(bounded by the runtime's stop budget), the instances' VMACs are deleted and the
sysctls it changed restored.

Status: ``GET /vrrp`` on the runtime API (:mod:`herder.api.server`) returns every
instance (state, priorities, master, counters, drops by reason, VRID collisions, recent
transitions with their causes), every tracked object and every socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from herder.api.server import Request, add_route
from herder.config.native import register_section
from herder.ha.vrrp.actions import HostActions, LinkInfo, Netlink, SysctlGuard, vmac_address
from herder.ha.vrrp.io import InstanceDriver, VrrpSocket
from herder.ha.vrrp.machine import InstanceConfig, Notify, State, VrrpMachine
from herder.ha.vrrp.notify import Notifier, NotifyScripts
from herder.ha.vrrp.settings import VRRP_SECTION, InstanceSpec, SyncGroupSpec, VrrpSettings
from herder.ha.vrrp.track import LinkMonitor, ScriptTracker, ServiceTracker, TrackResult, evaluate
from herder.runtime import register_component

if TYPE_CHECKING:
    from herder.runtime import Runtime

__all__ = ["VrrpComponent", "vrrp_for"]

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
#: How long to wait for an IPv6 link-local address to finish duplicate address detection.
LINK_LOCAL_WAIT_S = 3.0

_by_runtime: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

Listener = Callable[[str, State, State, str], None]


def vrrp_for(runtime: Runtime) -> VrrpComponent | None:
    """The running VRRP component of ``runtime`` (for other layers: who is MASTER?)."""
    return _by_runtime.get(runtime)


class _Instance:
    """One configured instance and everything built for it."""

    def __init__(self, spec: InstanceSpec) -> None:
        self.spec = spec
        self.base: LinkInfo | None = None
        self.vmac: LinkInfo | None = None
        self.driver: InstanceDriver | None = None
        self.backend: HostActions | None = None
        self.group: SyncGroupSpec | None = None
        self.own_faults: tuple[str, ...] = ()
        self.tracking: tuple[int, tuple[str, ...]] | None = None

    @property
    def own_links(self) -> list[str]:
        out = [self.spec.interface]
        if self.vmac is not None:
            out.append(self.vmac.name)
        return out


class VrrpComponent:
    """See the module docstring."""

    name = "vrrp"

    def __init__(self, runtime: Runtime, settings: VrrpSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.instances = {n: _Instance(s) for n, s in settings.instances.items()}
        for g in settings.sync_groups.values():
            for m in g.members:
                self.instances[m].group = g
        self.group_state: dict[str, State] = {g: State.INITIALIZE for g in settings.sync_groups}
        self.netlink: Netlink | None = None
        self.notifier = Notifier(settings.notify_timeout_s)
        self.sockets: dict[tuple[str, int], VrrpSocket] = {}
        self.scripts: dict[str, ScriptTracker] = {}
        self.links = LinkMonitor(self._links_changed)
        self.services: ServiceTracker | None = None
        self.sysctls = SysctlGuard()
        self._created_links: list[str] = []
        self._listeners: list[Listener] = []
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.netlink = Netlink()
        self.notifier.start()
        try:
            await self._setup()
        except BaseException:
            await self.stop()
            raise
        _by_runtime[self.runtime] = self

    async def _setup(self) -> None:
        nl = self.netlink
        assert nl is not None
        loop = asyncio.get_running_loop()
        for inst in self.instances.values():
            await self._build(inst, loop)
        # trackers: scripts tracked by some instance, links, herder pools
        wanted_scripts = {ref.name for i in self.instances.values() for ref in i.spec.track_scripts}
        for name in sorted(wanted_scripts):
            self.scripts[name] = ScriptTracker(self.settings.scripts[name], self._retrack)
        self.links.start((li.name, li.up) for li in await nl.links())
        self.services = ServiceTracker(self.runtime.pool_state, self._service_targets(), self._retrack)
        for inst in self.instances.values():
            if inst.group is not None and (inst.spec.track_scripts or inst.spec.track_interfaces):
                if any((r.weight if r.weight is not None else self.settings.scripts[r.name].weight) != 0
                       for r in inst.spec.track_scripts) or any(r.weight for r in inst.spec.track_interfaces):
                    log.warning("(%s) is in sync group %s: its tracking weights are set to 0 (keepalived does the "
                                "same, so that all members keep one priority)", inst.spec.name, inst.group.name)
            if inst.spec.priority == 255 and (inst.spec.track_scripts or inst.spec.track_interfaces):
                log.warning("(%s) is the address owner (priority 255): tracking weights do not change its "
                            "priority; only faults apply", inst.spec.name)
        self.services.start()  # its first results (no retrack yet: the drivers are not running)
        self._started = True
        self._retrack(apply=False)
        for inst in self.instances.values():
            assert inst.driver is not None and inst.tracking is not None
            inst.driver.machine.set_tracking(loop.time(), adjust=inst.tracking[0], faults=inst.tracking[1])
        for inst in self.instances.values():
            assert inst.driver is not None
            inst.driver.start()
        for tracker in self.scripts.values():
            tracker.start()

    async def _build(self, inst: _Instance, loop: asyncio.AbstractEventLoop) -> None:
        nl = self.netlink
        assert nl is not None
        spec = inst.spec
        base = await nl.link(spec.interface)
        if base is None:
            raise RuntimeError(f"vrrp instance {spec.name}: interface {spec.interface} does not exist")
        inst.base = base
        primary = spec.unicast_src_ip or await self._primary(base, spec.family, spec.name)
        if spec.use_vmac:
            mac = vmac_address(spec.vrid, spec.family)
            vmac, created = await nl.ensure_macvlan(base.index, spec.use_vmac, mac)
            # deleted at stop even when reused: a leftover of a killed herder is ours too
            self._created_links.append(vmac.name)
            log.info("(%s) VMAC %s (%s) on %s%s", spec.name, vmac.name, mac, base.name,
                     "" if created else " (reused)")
            self.sysctls.vmac(base.name, vmac.name)
            inst.vmac = vmac
        vip_link = inst.vmac or base
        sock_link = inst.vmac if inst.vmac is not None and not spec.vmac_xmit_base else base
        key = (sock_link.name, spec.family)
        sock = self.sockets.get(key)
        if sock is None:
            sock = VrrpSocket(sock_link.name, sock_link.index, spec.family)
            sock.open(loop)
            self.sockets[key] = sock
        vips = {v.ip: (v.interface, v.dev, v.label) for v in spec.vips}
        inst.backend = HostActions(nl, spec.name, vips, vip_link, vip_link)
        await inst.backend.open(spec.family)
        config = InstanceConfig(
            name=spec.name, vrid=spec.vrid, priority=spec.priority, version=spec.version, family=spec.family,
            advert_int_s=spec.advert_int_s, vips=spec.vip_addresses,
            preempt=spec.preempt, preempt_delay_s=spec.preempt_delay_s, start_master=spec.state == "MASTER",
            unicast=bool(spec.unicast_peers), lower_prio_no_advert=spec.lower_prio_no_advert,
            higher_prio_send_advert=spec.higher_prio_send_advert, garp=spec.garp,
        )
        if not config.preempt and config.start_master:
            # keepalived: "nopreempt will not work with initial state MASTER"
            log.warning("(%s) nopreempt does not work with state MASTER: preemption stays on (as keepalived)",
                        spec.name)
            config = replace(config, preempt=True)
        machine = VrrpMachine(config, primary)
        scripts = NotifyScripts(spec.notify_master, spec.notify_backup, spec.notify_fault, spec.notify_stop,
                                spec.notify)

        def notify(n: Notify, _scripts: NotifyScripts = scripts) -> None:
            self.notifier.transition("INSTANCE", n.instance, n.new, n.priority, n.cause, _scripts)

        inst.driver = InstanceDriver(machine, sock, inst.backend, peers=spec.unicast_peers,
                                     on_transition=self._on_transition, notify=notify)
        log.info("(%s) VRRPv%d VRID %d on %s (IPv%d) from %s, priority %d, advert %gs, VIPs %s%s", spec.name,
                 spec.version, spec.vrid, sock_link.name, spec.family, primary, spec.priority, spec.advert_int_s,
                 ", ".join(str(v) for v in spec.vips),
                 f", unicast to {', '.join(map(str, spec.unicast_peers))}" if spec.unicast_peers else "")

    async def _primary(self, link: LinkInfo, family: int, name: str) -> IPAddress:
        assert self.netlink is not None
        deadline = time.monotonic() + LINK_LOCAL_WAIT_S
        while True:
            addrs = await self.netlink.addresses(link.index, family)
            if family == 4:
                for iface, scope, _flags in addrs:
                    if scope == 0:
                        return iface.ip
                raise RuntimeError(f"vrrp instance {name}: {link.name} has no IPv4 address (set unicast_src_ip, "
                                   "or give the interface an address)")
            lls = [(iface.ip, flags) for iface, scope, flags in addrs if iface.ip.is_link_local]
            ready = [ip for ip, flags in lls if not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)]
            if ready:
                return ready[0]
            if not lls or time.monotonic() >= deadline:
                raise RuntimeError(f"vrrp instance {name}: {link.name} has no usable IPv6 link-local address"
                                   + (" (still tentative: duplicate address detection)" if lls else ""))
            await asyncio.sleep(0.1)

    def _service_targets(self) -> dict[str, tuple[str, int]]:
        cfg = self.runtime.config
        out: dict[str, tuple[str, int]] = {}
        for inst in self.instances.values():
            for ts in inst.spec.track_services:
                if ts.service is not None:
                    svc = cfg.services.get(ts.service)
                    if svc is None:
                        raise RuntimeError(f"vrrp instance {inst.spec.name}: track_service names service "
                                           f"{ts.service!r}, which the configuration does not define")
                    pool = svc.pool
                else:
                    pool = ts.pool or ""
                    if pool not in cfg.pools:
                        raise RuntimeError(f"vrrp instance {inst.spec.name}: track_service names pool {pool!r}, "
                                           "which the configuration does not define")
                out[ts.label] = (pool, ts.min_up)
        return out

    async def stop(self) -> None:
        started = time.monotonic()
        drivers = [i.driver for i in self.instances.values() if i.driver is not None]
        for t in self.scripts.values():
            await t.stop()
        await asyncio.gather(*(d.stop(0.5) for d in drivers), return_exceptions=True)
        budget = max(0.1, 1.2 - (time.monotonic() - started))
        if not await self.notifier.drain(budget):
            log.warning("notify scripts still running at stop; not waiting for them")
        await self.notifier.stop()
        self.links.stop()
        if self.services is not None:
            self.services.stop()
        for inst in self.instances.values():
            if inst.backend is not None:
                inst.backend.close()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        if self.netlink is not None:
            for name in self._created_links:
                try:
                    await self.netlink.delete_link(name)
                except Exception as e:  # stopping must go on
                    log.warning("cannot delete %s: %s", name, e)
            self._created_links.clear()
            self.sysctls.restore()
            await self.netlink.close()
            self.netlink = None
        _by_runtime.pop(self.runtime, None)

    # ------------------------------------------------------------------ tracking

    def _links_changed(self, names: set[str]) -> None:
        self._retrack()

    def _retrack(self, apply: bool = True) -> None:
        """Recompute every instance's (adjust, faults); apply the changed ones."""
        if not self._started:
            return
        scripts = {n: t.result for n, t in self.scripts.items()}
        links: dict[str, TrackResult] = dict(self.links.results)
        services = self.services.results if self.services is not None else {}
        own: dict[str, tuple[int, tuple[str, ...]]] = {}
        for name, inst in self.instances.items():
            own[name] = evaluate(inst.spec, self.settings.scripts, scripts, links, services,
                                 own_links=inst.own_links, in_sync_group=inst.group is not None)
            inst.own_faults = own[name][1]
        for name, inst in self.instances.items():
            adjust, faults = own[name]
            if inst.group is not None:
                faults = faults + tuple(f"sync group {inst.group.name}: {m} in fault"
                                        for m in inst.group.members if m != name and self.instances[m].own_faults)
            new = (adjust, faults)
            if new == inst.tracking:
                continue
            inst.tracking = new
            if apply and inst.driver is not None:
                inst.driver.set_tracking(adjust, faults)

    # ------------------------------------------------------------------ transitions

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(instance, old, new, cause)`` on every transition (other layers)."""
        self._listeners.append(callback)

    def _on_transition(self, driver: InstanceDriver, n: Notify) -> None:
        for cb in list(self._listeners):
            try:
                cb(n.instance, n.old, n.new, n.cause)
            except Exception:
                log.exception("vrrp transition listener failed")
        inst = self.instances.get(n.instance)
        if inst is None or inst.group is None:
            return
        g = inst.group
        others = [self.instances[m] for m in g.members if m != n.instance]
        if n.new is State.MASTER:
            for o in others:
                if o.driver is not None and o.driver.machine.state is State.BACKUP:
                    o.driver.promote(f"sync group {g.name}: {n.instance} became master")
        elif n.old is State.MASTER and n.new is State.BACKUP:
            for o in others:
                if o.driver is not None and o.driver.machine.state is State.MASTER:
                    o.driver.demote(f"sync group {g.name}: {n.instance} left master")
        states = [self.instances[m].driver.machine.state for m in g.members  # type: ignore[union-attr]
                  if self.instances[m].driver is not None]
        if any(s is State.FAULT for s in states):
            gs = State.FAULT
        elif all(s is State.MASTER for s in states):
            gs = State.MASTER
        elif all(s is State.INITIALIZE for s in states):
            gs = State.INITIALIZE
        else:
            gs = State.BACKUP
        if gs is not self.group_state[g.name]:
            old = self.group_state[g.name]
            self.group_state[g.name] = gs
            log.info("sync group %s: %s -> %s (%s: %s)", g.name, old.value, gs.value, n.instance, n.cause)
            self.notifier.transition("GROUP", g.name, gs, 0, n.cause,
                                     NotifyScripts(g.notify_master, g.notify_backup, g.notify_fault, g.notify_stop,
                                                   g.notify))

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"router_id": self.settings.router_id, "instances": {}, "sync_groups": {},
                               "scripts": {n: t.status() for n, t in self.scripts.items()},
                               "sockets": [s.status() for s in self.sockets.values()],
                               "notify": {"runs": self.notifier.runs, "failures": self.notifier.failures}}
        for name, inst in self.instances.items():
            if inst.driver is None:
                continue
            st = inst.driver.status()
            st["interface"] = inst.spec.interface
            st["vmac"] = None if inst.vmac is None else {"name": inst.vmac.name, "mac": inst.vmac.mac}
            st["unicast_peers"] = [str(p) for p in inst.spec.unicast_peers]
            st["sync_group"] = None if inst.group is None else inst.group.name
            st["tracking"] = {
                "adjust": None if inst.tracking is None else inst.tracking[0],
                "scripts": {r.name: _res(self.scripts[r.name].result) for r in inst.spec.track_scripts
                            if r.name in self.scripts},
                "interfaces": {n: _res(self.links.results.get(n)) for n in
                               [*inst.own_links, *(r.name for r in inst.spec.track_interfaces)]},
                "services": {s.label: _res(self.services.results.get(s.label) if self.services else None)
                             for s in inst.spec.track_services},
            }
            st["gratuitous_sent"] = inst.backend.garps_sent if inst.backend is not None else 0
            out["instances"][name] = st
        for g in self.settings.sync_groups.values():
            out["sync_groups"][g.name] = {"state": self.group_state[g.name].value, "members": list(g.members)}
        return out


def _res(r: TrackResult | None) -> dict[str, Any] | None:
    return None if r is None else {"ok": r.ok, "reason": r.reason}


# --------------------------------------------------------------------------- registration


def _status_route(rt: Runtime, req: Request) -> tuple[int, Any]:
    comp = vrrp_for(rt)
    if comp is None:
        return 404, {"error": "no [vrrp] section is running"}
    return 200, comp.status()


def _factory(rt: Runtime) -> list[VrrpComponent]:
    sec = rt.config.section("vrrp")
    if not isinstance(sec, VrrpSettings) or not sec.instances:
        return []
    return [VrrpComponent(rt, sec)]


register_section("vrrp", VRRP_SECTION)
add_route("GET", "/vrrp", _status_route)
register_component("vrrp", _factory, order=60)
