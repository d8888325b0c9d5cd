"""The ``l4`` component: the director that keeps the kernel's tables in step with the pool state.

Theory of operation
-------------------
The director subscribes to the :class:`~herder.pool.state.PoolState`. Each snapshot it
receives is only remembered and a worker task woken; the worker plans the latest
snapshot (:func:`herder.l4.plan.plan`), and the :class:`~herder.l4.apply_nft.Applier`
diffs and applies it in one nftables transaction, off the event loop. Snapshots that
arrive while an update is being applied are coalesced: a plan is always made from a
complete snapshot, so applying only the newest one loses nothing.

A failed update leaves the previous ruleset in the kernel; it is logged with
nftables' message, counted, and retried with the next snapshot (or after
``retry_s``). The first update happens in :meth:`Director.start`; if it fails, the
director does not start.

Around the tables the director does what ipvsadm users do by hand, and says so in the
log: with ``vip_device`` it adds each VIP as a /32 (removed at stop, only if it added
it); for direct routing it finds the interface the VIP traffic arrives on (the VIP's,
else the route towards the VIP); for NAT it checks ``ip_forward`` and warns when
forwarding is off. At stop it deletes herder's tables (unless ``keep_on_exit``).

Each apply writes the ruleset (without its tables) to a state file in
:func:`state_dir`, which ``herder ipvsadm -L`` reads to show the running director's
table, as ``ipvsadm -L`` shows the kernel's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herder import proc
from herder.l4.apply_nft import Applier, ApplyError, NftBackend, NftError, RecordingBackend, default_backend
from herder.l4.config import L4Settings, l4_settings, specs_from_config
from herder.l4.plan import plan
from herder.l4.ruleset import Forward, Ruleset, VirtualServiceSpec, ruleset_to_json
from herder.pool.state import PoolState, Snapshot
from herder.runtime import register_component

if TYPE_CHECKING:
    from herder.runtime import Runtime

__all__ = ["Director", "read_director_state", "resolve_devices", "state_dir"]

log = logging.getLogger(__name__)


def state_dir() -> Path:
    """Where the L4 state of *this network namespace* lives: ``/run/herder/l4/<netns inode>``
    (``$HERDER_L4_STATE_DIR`` overrides the base). Per namespace, because nftables
    tables are per namespace: a director in each lab node has its own."""
    base = Path(os.environ.get("HERDER_L4_STATE_DIR", "/run/herder/l4"))
    try:
        ino = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        ino = 0
    return base / f"netns-{ino}"


def read_director_state() -> dict[str, Any] | None:
    """The running director's last written state in this namespace, or None if no director
    runs here (a stale file of a dead process is ignored)."""
    path = state_dir() / "director.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not proc.pid_running(int(data.get("pid", 0)), data.get("start_time")):
        return None
    return data


def _ip_json(argv: list[str]) -> Any:
    res = proc.run_sync(["ip", "-j", *argv], timeout=5)
    if res.returncode != 0:
        raise OSError(res.stderr.decode(errors="replace").strip() or f"ip {' '.join(argv)} failed")
    text = res.stdout.decode().strip()
    return json.loads(text) if text else []


def _device_of_address(addr: str) -> str | None:
    for link in _ip_json(["-4", "addr", "show"]):
        for a in link.get("addr_info", ()):
            if a.get("local") == addr and link.get("ifname") != "lo":
                return link.get("ifname")
    return None


def _route_device(addr: str) -> str | None:
    try:
        routes = _ip_json(["route", "get", addr])
    except OSError:
        return None
    for r in routes:
        dev = r.get("dev")
        if dev and dev != "lo":
            return dev
    return None


def resolve_devices(spec: VirtualServiceSpec, server_addresses: list[str]) -> VirtualServiceSpec:
    """Fill in a DR spec's devices from the system: ingress = configured, else the
    interface holding the VIP, else the route towards the VIP; egress = configured,
    else the route towards the first real server, else the ingress device. NAT specs
    are returned unchanged.

    Raises:
        ValueError: no ingress device can be found.
    """
    if spec.forward is not Forward.DR:
        return spec
    ingress = spec.ingress_device or _device_of_address(spec.vip) or _route_device(spec.vip)
    if not ingress:
        raise ValueError(f"{spec.key}: cannot tell which interface the VIP traffic arrives on; set `device`")
    egress = spec.egress_device
    if egress is None and server_addresses:
        egress = _route_device(server_addresses[0])
    from dataclasses import replace

    return replace(spec, ingress_device=ingress, egress_device=egress or ingress)


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys/" + name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


class Director:
    """The ``l4`` component for the kernel path (see the module docstring).

    Args:
        specs: the virtual services.
        pool_state: the pool state to follow.
        backend: where transactions go (libnftables, nft, recording).
        settings: the ``[l4]`` section.
        resolve: find DR devices and VIP ownership from the system (off in unit tests).
        write_state: write the state file for ``herder ipvsadm -L``.
        retry_s: after a failed update, try again after this long even without a change.
    """

    def __init__(self, specs: list[VirtualServiceSpec], pool_state: PoolState, backend: NftBackend,
                 settings: L4Settings | None = None, *, resolve: bool = True, write_state: bool = True,
                 retry_s: float = 5.0) -> None:
        self.specs = list(specs)
        #: The specs as the configuration gives them (before devices are resolved).
        self._declared = list(specs)
        self._respec_task: asyncio.Task | None = None
        self.pool_state = pool_state
        self.settings = settings or L4Settings()
        self.applier = Applier(backend, self.settings.table)
        self.resolve = resolve
        self.write_state = write_state
        self.retry_s = retry_s
        self.name = f"l4 director ({backend.name}, {len(self.specs)} virtual service(s))"
        self.ruleset: Ruleset | None = None
        self.updates = 0
        self._latest: Snapshot | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sub = None
        self._vips_added: list[str] = []
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.resolve:
            await loop.run_in_executor(None, self._prepare_system)
        self._sub = self.pool_state.subscribe(self._on_snapshot, name="l4 director", replay=False)
        self._latest = self.pool_state.snapshot
        try:
            await self._update(raise_errors=True)
        except BaseException:
            self._sub.close()
            await loop.run_in_executor(None, self._undo_vips)
            raise
        self._task = loop.create_task(self._run(), name="l4 director")

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._respec_task is not None:
            self._respec_task.cancel()
            try:
                await self._respec_task
            except BaseException:
                pass
            self._respec_task = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        loop = asyncio.get_running_loop()
        async with self._lock:
            if not self.settings.keep_on_exit:
                try:
                    await loop.run_in_executor(None, self.applier.remove)
                    log.info("l4: removed nftables tables of %s", self.settings.table)
                except NftError as e:
                    log.error("l4: could not remove herder's nftables tables: %s", e)
            await loop.run_in_executor(None, self._undo_vips)
        if self.write_state:
            try:
                (state_dir() / "director.json").unlink()
                state_dir().rmdir()  # only when nothing else (ipvsadm, realserver) keeps state here
            except OSError:
                pass
        self.applier.backend.close()

    # ------------------------------------------------------------------ system

    def _prepare_system(self) -> None:
        self.specs = self._prepare(self.specs)

    def _prepare(self, specs: list[VirtualServiceSpec]) -> list[VirtualServiceSpec]:
        """Make the system ready for ``specs`` (VIPs on ``vip_device``, DR devices found);
        the specs with their devices filled in. Blocking: run it in an executor."""
        if self.settings.vip_device:
            for vip in sorted({s.vip for s in specs}):
                if _device_of_address(vip) is None:
                    res = proc.run_sync(["ip", "addr", "add", f"{vip}/32", "dev", self.settings.vip_device],
                                        timeout=5)
                    if res.returncode != 0:
                        raise OSError(f"cannot add VIP {vip} to {self.settings.vip_device}: "
                                      f"{res.stderr.decode(errors='replace').strip()}")
                    self._vips_added.append(vip)
                    log.info("l4: added VIP %s/32 to %s", vip, self.settings.vip_device)
        if any(s.forward is Forward.NAT for s in specs) and _sysctl("net.ipv4.ip_forward") == "0":
            log.warning("l4: net.ipv4.ip_forward is 0: NAT services need forwarding on "
                        "(sysctl -w net.ipv4.ip_forward=1)")
        snap = self.pool_state.snapshot
        resolved = []
        for spec in specs:
            view = snap.pools.get(spec.pool)
            addrs = [v.server.address.host for v in view.servers] if view else []
            new = resolve_devices(spec, addrs)
            if new is not spec:
                log.info("l4: %s (direct routing) takes packets on %s, forwards on %s",
                         spec.key, new.ingress_device, new.egress_device)
            resolved.append(new)
        return resolved

    # ------------------------------------------------------------------ reload

    def apply_config(self, config) -> tuple[str, ...]:
        """A reload: the kernel-path virtual services of ``config`` (added, removed, or
        changed: scheduler, forwarding, persistence...) go to the kernel with the next
        transaction, which keeps established connections as any other update does. A
        changed ``[l4]`` section needs a restart. Returns ``service:NAME`` for each
        service it took (the runtime warns about the others)."""
        if l4_settings(config.section("l4")) != self.settings:  # type: ignore[arg-type]
            return ()
        want = [sp for sp in specs_from_config(config) if _engine(config, sp.name) != "relay"]
        if [(s.key, s) for s in want] == [(s.key, s) for s in self._declared]:
            return tuple(f"service:{s.name}" for s in want)
        taken = {f"service:{s.name}" for s in (*want, *self._declared)}
        self._declared = want
        self._respec_task = asyncio.get_running_loop().create_task(self._respec(want))
        return tuple(sorted(taken))

    async def _respec(self, want: list[VirtualServiceSpec]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self._lock:
                resolved = await loop.run_in_executor(None, self._prepare, want) if self.resolve else list(want)
                old = {s.vip for s in self.specs}
                self.specs = resolved
                gone = old - {s.vip for s in resolved}
                drop = [v for v in self._vips_added if v in gone]
                if drop:
                    self._vips_added = [v for v in self._vips_added if v not in gone]
                    await loop.run_in_executor(None, self._remove_vips, drop)
            log.info("l4: %d virtual service(s) after the reload", len(resolved))
            self._latest = self.pool_state.snapshot
            self._wake.set()
        except Exception:
            log.exception("l4: applying the reloaded virtual services failed; the previous ones stay")

    def _undo_vips(self) -> None:
        vips, self._vips_added = self._vips_added, []
        self._remove_vips(list(reversed(vips)))

    def _remove_vips(self, vips: list[str]) -> None:
        for vip in vips:
            res = proc.run_sync(["ip", "addr", "del", f"{vip}/32", "dev", str(self.settings.vip_device)], timeout=5)
            if res.returncode == 0:
                log.info("l4: removed VIP %s/32 from %s", vip, self.settings.vip_device)

    # ------------------------------------------------------------------ updates

    def _on_snapshot(self, snap: Snapshot) -> None:
        self._latest = snap
        self._wake.set()

    async def _run(self) -> None:
        while True:
            failed = self.applier.last_error is not None
            try:
                await asyncio.wait_for(self._wake.wait(), self.retry_s if failed else None)
            except TimeoutError:
                pass
            self._wake.clear()
            await self._update(raise_errors=False)

    async def _update(self, *, raise_errors: bool) -> None:
        snap = self._latest
        if snap is None:
            return
        loop = asyncio.get_running_loop()
        async with self._lock:
            try:
                await loop.run_in_executor(None, self._plan_and_apply, snap)
            except ApplyError:
                if raise_errors:
                    raise

    def _plan_and_apply(self, snap: Snapshot) -> None:
        t0 = time.perf_counter()
        s = self.settings
        rs = plan(snap, self.specs, previous=self.ruleset, table=s.table, seed=s.seed,
                  flow_timeouts=s.flow_timeouts)
        t1 = time.perf_counter()
        res = self.applier.apply(rs)
        new_problems = set(rs.problems) - set(self.ruleset.problems if self.ruleset else ())
        for p in sorted(new_problems):
            log.warning("l4: %s", p)
        self.ruleset = rs
        self.updates += 1
        if res.changed:
            log.info("l4: snapshot %d applied: %d nft command(s) in one transaction, plan %.1f ms, "
                     "apply %.1f ms%s", snap.version, res.commands, (t1 - t0) * 1000, res.duration_s * 1000,
                     " (tables replaced)" if res.full else "")
        if self.write_state:
            self._save_state(rs)

    def _save_state(self, rs: Ruleset) -> None:
        d = state_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f"director.json.{os.getpid()}"
            tmp.write_text(json.dumps({"pid": os.getpid(), "start_time": proc.pid_start_time(os.getpid()),
                                       "backend": self.applier.backend.name,
                                       "ruleset": ruleset_to_json(rs)}))
            tmp.replace(d / "director.json")
        except OSError as e:
            log.debug("l4: cannot write state file in %s: %s", d, e)


def _nft_usable() -> str | None:
    """Why the kernel path cannot be used here (None when it can)."""
    if os.geteuid() != 0:
        return "not running as root"
    try:
        backend = default_backend()
    except NftError as e:
        return str(e)
    try:
        backend.list_json("tables")
    except NftError as e:
        return f"nftables does not answer: {e}"
    finally:
        backend.close()
    return None


def _engine(config, name: str) -> str:
    """A service's ``engine`` key: auto, kernel or relay."""
    svc = config.services.get(name)
    return str(svc.settings.get("engine") or "auto") if svc is not None else "auto"


def _factory(rt: Runtime) -> list[Any]:
    all_specs = specs_from_config(rt.config)
    if not all_specs:
        return []
    settings = l4_settings(rt.config.section("l4"))  # type: ignore[arg-type]

    def engine(spec) -> str:
        return _engine(rt.config, spec.name)

    out: list[Any] = []
    relayed = [sp for sp in all_specs if engine(sp) == "relay"]
    specs = [sp for sp in all_specs if engine(sp) != "relay"]
    if relayed:
        from herder.l4.userspace import Relay

        out.append(Relay(relayed, rt.pool_state, settings))
    if not specs:
        return out
    backend = settings.backend
    if backend != "auto" and any(engine(sp) == "kernel" for sp in specs) and backend == "userspace":
        log.warning("l4: [l4] backend is userspace; services with engine = \"kernel\" use it too")
    if backend == "auto":
        why = _nft_usable()
        if why is None:
            backend = "nft"
        else:
            log.warning("l4: kernel path unavailable (%s); serving the L4 services with the userspace relay",
                        why)
            backend = "userspace"
    if backend == "userspace":
        from herder.l4.userspace import Relay

        return [*out, Relay(specs, rt.pool_state, settings)]
    nft: NftBackend
    if backend == "recording":
        nft = RecordingBackend()
    elif backend == "nft-cli":
        from herder.l4.apply_nft import NftCli

        nft = NftCli()
    else:
        nft = default_backend()
    return [*out, Director(specs, rt.pool_state, nft, settings, resolve=backend != "recording")]


register_component("l4", _factory, order=55)
